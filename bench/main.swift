import ArgumentParser

/// The lag-aware load tester is not built yet (its own issue). Until then this executable says
/// so plainly instead of pretending, and points to the scripts that measure today.
struct CausewayBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "causeway-bench",
        abstract: "Lag-aware load tester for Causeway (not implemented yet).",
        discussion: """
            Planned: `causeway-bench run` with verified read-your-writes, lag injection and an HTML
            report. Today, measure with:
              bench/compare.sh           pgbench -S through Causeway vs PgBouncer
              bench/compare-routing.sh   Causeway with replicas vs pgpool-II, lag reaction time
              bench/consistency.py       replica share and stale reads, session vs eventual
            """
    )

    func run() throws {
        print("causeway-bench is not implemented yet; see `causeway-bench --help` for the scripts that measure today.")
        throw ExitCode(2)
    }
}

CausewayBench.main()
