import CShims
import Foundation
import LagMonitor

/// Why a reload was refused; the configuration in force stays as it was.
public struct ReloadFailure: Error, CustomStringConvertible {
    public let description: String
}

extension ProxyRuntime {
    /// How long connections to a removed backend may stay busy before they are cut, like an
    /// expired DRAIN.
    static let removalGraceSeconds = 60.0

    /// SIGHUP and RELOAD: reads the configuration file again and applies what changed (see
    /// `ReloadPlan`). Connections to untouched backends are not disturbed.
    public func reload() throws(ReloadFailure) -> [ReloadChange] {
        guard let configPath else {
            throw ReloadFailure(description: "causeway was not started from a configuration file, so there is nothing to reload")
        }
        let config: CausewayConfig
        do {
            config = try CausewayConfig.load(path: configPath)
        } catch {
            throw ReloadFailure(description: "the new configuration is invalid and was not applied: \(error)")
        }
        return try apply(config)
    }

    /// Applies `new` in place of the configuration in force.
    func apply(_ new: CausewayConfig) throws(ReloadFailure) -> [ReloadChange] {
        try reloading.withLock { _ throws(ReloadFailure) -> [ReloadChange] in
            let old = settings
            let indexes = old.config.backends.map { old.liveIndex(named: $0.name) ?? -1 }
            let plan = ReloadPlan.make(current: old.config, indexes: indexes, new: new)
            var slots = old.slots
            for index in plan.removedIndexes { slots[index].removed = true }
            for (backend, kept) in zip(plan.config.backends, plan.keptIndexes) {
                if let kept {
                    slots[kept] = BackendSlot(backend: ResolvedBackend(config: backend, address: slots[kept].backend.address),
                                              counters: slots[kept].counters, removed: false)
                } else {
                    let resolved: ResolvedBackend
                    do {
                        resolved = try ResolvedBackend.resolve(backend)
                    } catch {
                        throw ReloadFailure(description: "the new configuration was not applied: \(error)")
                    }
                    slots.append(BackendSlot(backend: resolved, counters: BackendCounters(), removed: false))
                }
            }
            guard !plan.isEmpty else { return [] }
            let keys = Self.scramKeys(for: plan.config.users, reusing: old.scramKeys, previous: old.config.users)
            install { generation in
                RuntimeSettings(generation: generation, config: plan.config, slots: slots, scramKeys: keys)
            }
            let live = slots.indices.filter { !slots[$0].removed }
            monitor?.reconfigure(Self.monitored(slots, indexes: live))
            for index in plan.removedIndexes { retire(backend: index) }
            let log = self.log("reload")
            for change in plan.changes {
                log.info("reload_change", ["kind": change.kind.rawValue, "subject": change.subject, "detail": change.detail])
            }
            return plan.changes
        }
    }
}
