// `causeway-bench compare-report`: the summary step of bench/compare.sh.

import ArgumentParser
import BenchCore
import Foundation

struct CompareReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare-report",
        abstract: "Summarise bench/compare.sh measurements: table on stdout, compare.json and compare.html.",
        discussion: """
            Input: one measurement per line, key=value words: arm= tool= round= tps= p50_ms= p99_ms= \
            cpu_us= failed=, and `setting key=value …` lines describing the run. Rows get the mean \
            over rounds and the tps ratios against the arm named direct and the arm named causeway.
            """
    )

    @Argument(help: "The measurements file bench/compare.sh wrote.")
    var measurements: String
    @Option(help: ArgumentHelp("Directory for compare.json and compare.html.", valueName: "dir"))
    var out: String

    func run() throws {
        guard let text = try? String(contentsOfFile: measurements, encoding: .utf8) else {
            throw ValidationError("cannot read \(measurements)")
        }
        let report: CompareReport
        do { report = try CompareReport(parsing: text) } catch let error as WorkloadError {
            throw ValidationError("\(measurements): \(error.description)")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: out + "/compare.json"))
        try Data(report.html().utf8).write(to: URL(fileURLWithPath: out + "/compare.html"))
        print(report.table())
        print("report: \(out)/compare.html \(out)/compare.json")
    }
}
