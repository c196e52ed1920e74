// Built-in functions that decide routing. User functions declared VOLATILE come from the
// monitor (`Topology.volatileFunctions`); these are the built-ins a standby refuses, that change
// state only the primary can hold, or that read state only the primary has.

enum BuiltinFunctions {
    /// Must run on the primary.
    static let primaryOnly: Set<String> = [
        // Sequences: nextval/setval write; currval/lastval read this session's sequence state,
        // which exists only where nextval ran.
        "nextval", "setval", "currval", "lastval",
        // Transaction ids: assigning one is refused in recovery.
        "txid_current", "pg_current_xact_id",
        // Notifications and large objects (lo_* is covered by a prefix).
        "pg_notify", "lowrite",
        // WAL and replication control.
        "pg_switch_wal", "pg_switch_xlog", "pg_logical_emit_message", "pg_replication_slot_advance",
        "pg_walfile_name", "pg_walfile_name_offset", "pg_current_xlog_location",
        "pg_current_xlog_insert_location", "pg_current_xlog_flush_location",
        "pg_import_system_collations", "dblink_exec",
        // Server administration acts on the server it runs on; callers mean the primary.
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    ]

    static let primaryOnlyPrefixes: [String] = [
        "pg_advisory_", "pg_try_advisory_",  // advisory locks live on one server: the primary
        "lo_",                              // large objects
        "pg_current_wal_",                  // pg_current_wal_lsn() & co. fail in recovery
        "pg_create_", "pg_drop_", "pg_copy_", // restore points, replication slots
        "pg_replication_origin_",
    ]

    /// Session-level advisory lock acquisition: the lock outlives the transaction, so the session
    /// must stay on the server holding it.
    static let sessionAdvisoryLocks: Set<String> = [
        "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    ]

    static func requiresPrimary(_ name: String) -> Bool {
        primaryOnly.contains(name) || primaryOnlyPrefixes.contains { name.hasPrefix($0) }
    }

    /// Keywords that can be followed by `(` without being a function call.
    static let notFunctions: Set<String> = [
        "all", "and", "any", "array", "as", "asc", "between", "by", "case", "check", "constraint",
        "cube", "default", "desc", "distinct", "else", "end", "except", "exists", "filter", "for",
        "foreign", "from", "group", "grouping", "having", "ilike", "in", "include", "intersect",
        "into", "is", "join", "key", "lateral", "like", "limit", "not", "offset", "on", "only",
        "or", "order", "over", "partition", "primary", "range", "recursive", "references",
        "returning", "rollup", "row", "rows", "select", "set", "sets", "similar", "some", "table",
        "tablesample", "then", "union", "unique", "using", "values", "when", "where", "window",
        "with", "within",
    ]
}
