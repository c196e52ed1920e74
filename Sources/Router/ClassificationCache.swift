/// A bounded cache of classifications keyed by query text, evicting with the CLOCK algorithm
/// (an approximation of LRU that needs no list surgery on a hit). Not thread-safe: one per worker.
///
/// What it stores does not depend on the volatile-function list; that list is applied on every
/// lookup, so a new list from the monitor takes effect without invalidating anything.
public final class ClassificationCache {
    public let capacity: Int
    /// Longer texts are classified but not stored (they are rarely repeated and cost memory).
    public let maxQueryLength: Int
    public private(set) var hits = 0
    public private(set) var misses = 0

    private struct Slot {
        var query: String
        var classification: Classification
        var referenced: Bool
    }

    private var slots: [Slot] = []
    private var positions: [String: Int] = [:]
    private var hand = 0
    /// Admission filter: a text is stored only the second time it misses. Queries with inlined
    /// literals are unique and would otherwise churn the cache (an insert and an eviction per
    /// query) while never being hit.
    private var recentMisses: [Int]
    private static let recentMissSlots = 4096

    public init(capacity: Int = 4096, maxQueryLength: Int = 16 * 1024) {
        self.capacity = max(0, capacity)
        self.maxQueryLength = maxQueryLength
        recentMisses = [Int](repeating: 0, count: Self.recentMissSlots)
    }

    public var count: Int { slots.count }

    public func classify(_ sql: String, volatileFunctions: Set<String>) -> Classification {
        var classification = structure(of: sql)
        classification.isWrite = classification.isWrite(volatileFunctions: volatileFunctions)
        return classification
    }

    public func removeAll() {
        slots.removeAll()
        positions.removeAll()
        hand = 0
    }

    private func structure(of sql: String) -> Classification {
        if let position = positions[sql] {
            hits += 1
            slots[position].referenced = true
            return slots[position].classification
        }
        misses += 1
        let classification = QueryClassifier.classifyIgnoringVolatility(sql)
        guard capacity > 0, sql.utf8.count <= maxQueryLength else { return classification }
        let fingerprint = sql.hashValue | 1
        let filterSlot = Int(UInt(bitPattern: fingerprint) % UInt(Self.recentMissSlots))
        guard recentMisses[filterSlot] == fingerprint else {
            recentMisses[filterSlot] = fingerprint
            return classification
        }
        let slot = Slot(query: sql, classification: classification, referenced: false)
        if slots.count < capacity {
            positions[sql] = slots.count
            slots.append(slot)
            return classification
        }
        // Sweep: recently used entries get a second chance.
        while slots[hand].referenced {
            slots[hand].referenced = false
            hand = (hand + 1) % capacity
        }
        positions[slots[hand].query] = nil
        positions[sql] = hand
        slots[hand] = slot
        hand = (hand + 1) % capacity
        return classification
    }
}
