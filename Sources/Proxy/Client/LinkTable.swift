/// A session's server links, indexed by backend index. Backend indexes are small integers and a
/// request looks its link up several times, so this is an array rather than a dictionary.
struct LinkTable<Value>: Sequence {
    private var slots: [Value?] = []
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    // Plain get/set: coroutine accessors (_read/_modify) called out of line allocate a frame per
    // access. For values changed in place (a session's LinkState) use an array of optionals.
    subscript(index: Int) -> Value? {
        get { index < slots.count ? slots[index] : nil }
        set {
            if index >= slots.count { slots.append(contentsOf: repeatElement(nil, count: index + 1 - slots.count)) }
            if (slots[index] == nil) != (newValue == nil) { count += newValue == nil ? -1 : 1 }
            slots[index] = newValue
        }
    }

    @discardableResult
    mutating func removeValue(forKey index: Int) -> Value? {
        guard index < slots.count, let value = slots[index] else { return nil }
        slots[index] = nil
        count -= 1
        return value
    }

    mutating func removeAll() {
        for index in slots.indices { slots[index] = nil }
        count = 0
    }

    struct Iterator: IteratorProtocol {
        fileprivate let slots: [Value?]
        fileprivate var position = 0

        mutating func next() -> (index: Int, value: Value)? {
            while position < slots.count {
                defer { position += 1 }
                if let value = slots[position] { return (position, value) }
            }
            return nil
        }
    }

    func makeIterator() -> Iterator { Iterator(slots: slots) }
}
