import ArgumentParser

struct CausewayBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "causeway-bench",
        abstract: "Lag-aware load tester for Causeway and PostgreSQL: load, verified consistency, lag injection, reports.",
        discussion: """
            causeway-bench run drives load through libpq's non-blocking API, checks every read for
            read-your-writes and monotonic reads, samples replication lag, can pause replay on
            replicas on a schedule, and writes an HTML + JSON report.
            causeway-bench compare-report turns bench/compare.sh's measurements into a table and a report.
            """,
        subcommands: [RunCommand.self, CompareReportCommand.self]
    )
}

CausewayBench.main()
