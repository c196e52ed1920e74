// Small lock-protected boxes for the few values shared between the monitor thread and the rest
// of the process.

import Foundation

/// A value behind a mutex. Every access goes through `withLock`, which is what makes the
/// unchecked `Sendable` conformance sound.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// A value behind a mutex with a condition variable, so threads can wait for it to change.
final class ConditionLocked<Value>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        condition.lock()
        defer { condition.unlock() }
        return try body(&value)
    }

    /// Changes the value and wakes every waiter.
    func update<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return try body(&value)
    }

    /// Waits until `predicate` holds or `timeoutMs` passes (a negative timeout waits forever);
    /// returns what `predicate` last said.
    func wait(timeoutMs: Int, until predicate: (Value) -> Bool) -> Bool {
        let deadline = timeoutMs < 0 ? Date.distantFuture : Date(timeIntervalSinceNow: Double(timeoutMs) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while !predicate(value) {
            if !condition.wait(until: deadline) { return predicate(value) }
        }
        return true
    }
}
