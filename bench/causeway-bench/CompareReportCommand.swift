import ArgumentParser

struct CompareReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "compare-report", abstract: "placeholder")
    func run() throws {}
}
