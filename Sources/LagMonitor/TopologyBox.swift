// The one place the monitor's snapshots are handed to the workers (design §3): an immutable
// `Topology` swapped under a lock. Reading is a lock plus a copy of a few references.

import Router
import Synchronization

/// Holds the latest `Topology`. Every published snapshot gets the next generation number and the
/// current drain flags, so a drain set by an operator is never lost to a snapshot the monitor was
/// building at the same moment.
public final class TopologyBox: Sendable {
    private struct State {
        var topology: Topology
        var draining: Set<String> = []
    }

    private let state: ConditionLocked<State>
    /// The latest generation, readable without the lock: a reader that holds a snapshot of this
    /// generation need not take the lock to know it is current.
    private let latest = Atomic<UInt64>(0)

    /// A box holding `initial` as published (its generation is kept).
    public init(_ initial: Topology = Topology(backends: [])) {
        state = ConditionLocked(State(topology: initial))
        latest.store(initial.generation, ordering: .releasing)
    }

    /// The generation of the latest snapshot, without the lock (one atomic load).
    public var latestGeneration: UInt64 { latest.load(ordering: .acquiring) }

    /// The latest snapshot. Cheap; call it at every routing decision.
    public func current() -> Topology {
        state.withLock { $0.topology }
    }

    /// Generation of the latest snapshot.
    public var generation: UInt64 {
        state.withLock { $0.topology.generation }
    }

    /// Names of the backends currently marked draining.
    public var drainingNames: Set<String> {
        state.withLock { $0.draining }
    }

    /// Publishes `topology` as the next generation, with the drain flags applied by name.
    /// The monitor calls this after every poll round; tests may publish made-up snapshots.
    public func publish(_ topology: Topology) {
        state.update { state in
            var next = topology
            next.generation = state.topology.generation &+ 1
            Self.applyDraining(state.draining, to: &next)
            state.topology = next
            latest.store(next.generation, ordering: .releasing)
        }
    }

    /// Marks a backend (by name) draining or not and, when that changes anything, publishes the
    /// latest snapshot again right away with the new flag. Returns whether the flag changed.
    @discardableResult
    public func setDraining(_ name: String, _ draining: Bool) -> Bool {
        state.update { state in
            let changed = draining ? state.draining.insert(name).inserted : state.draining.remove(name) != nil
            guard changed else { return false }
            var next = state.topology
            next.generation = state.topology.generation &+ 1
            Self.applyDraining(state.draining, to: &next)
            state.topology = next
            latest.store(next.generation, ordering: .releasing)
            return true
        }
    }

    /// Blocks the calling thread until a snapshot with generation ≥ `atLeast` is published or
    /// `timeoutMs` passes. Returns whether it was. For tests and operational tooling — never call
    /// it on an event-loop thread.
    public func waitForGeneration(atLeast generation: UInt64, timeoutMs: Int) -> Bool {
        state.wait(timeoutMs: timeoutMs) { $0.topology.generation >= generation }
    }

    /// Blocks until a published snapshot satisfies `predicate` or `timeoutMs` passes, and returns
    /// that snapshot (nil on timeout). Same caveats as `waitForGeneration`.
    public func wait(timeoutMs: Int, until predicate: (Topology) -> Bool) -> Topology? {
        var matched: Topology?
        _ = state.wait(timeoutMs: timeoutMs) { state in
            if predicate(state.topology) {
                matched = state.topology
                return true
            }
            return false
        }
        return matched
    }

    private static func applyDraining(_ names: Set<String>, to topology: inout Topology) {
        for i in topology.backends.indices {
            topology.backends[i].draining = names.contains(topology.backends[i].name)
        }
    }
}
