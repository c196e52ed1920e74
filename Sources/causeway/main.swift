import ArgumentParser
import Foundation
import Proxy

struct Causeway: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "causeway",
        abstract: "PostgreSQL read/write routing proxy.",
        discussion: """
            Run the proxy:            causeway --config conf/causeway.toml
            Validate a config file:   causeway check-config conf/causeway.toml
            Local test cluster:       causeway sandbox up | status | down

            Signals: SIGTERM lets clients finish their transactions (bounded by --shutdown-timeout),
            SIGINT disconnects them at once.
            """,
        version: CausewayVersion.string,
        subcommands: [CheckConfig.self, SandboxCommand.self]
    )

    @Option(name: .shortAndLong, help: "Path of the TOML configuration file.")
    var config: String = "conf/causeway.toml"

    @Option(help: "Seconds SIGTERM waits for open transactions before disconnecting clients.")
    var shutdownTimeout: Double = 30

    func run() throws {
        let loaded: CausewayConfig
        do {
            loaded = try CausewayConfig.load(path: config)
        } catch {
            throw ValidationError("invalid configuration: \(error)")
        }
        let runtime = try ProxyRuntime(config: loaded, configPath: config)
        try ProxyServer(runtime: runtime, gracefulTimeoutSeconds: shutdownTimeout).run()
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and print a summary; exit status 1 if it is invalid."
    )

    @Argument(help: "Path of the TOML configuration file.")
    var file: String

    func run() throws {
        do {
            let config = try CausewayConfig.load(path: file)
            print("\(file): OK")
            print("listen \(config.proxy.listen.host):\(config.proxy.listen.port), pool_mode \(config.proxy.poolMode.rawValue), auth \(config.proxy.authType.rawValue)")
            for backend in config.backends {
                print("backend \(backend.name) \(backend.host):\(backend.port) role=\(backend.role.rawValue) zone=\(backend.zone)")
            }
            print("users: \(config.users.map(\.name).joined(separator: ", "))")
        } catch {
            FileHandleOutput.standardError("\(error)\n")
            throw ExitCode(1)
        }
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}

Causeway.main()
