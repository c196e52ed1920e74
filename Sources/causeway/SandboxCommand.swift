// `causeway sandbox up|status|down`: a local primary + streaming replicas for trying and testing
// the proxy. The work is done by the Sandbox module.

import ArgumentParser
import Foundation
import Proxy
import Sandbox

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Start, inspect or remove a local PostgreSQL cluster (a primary and streaming replicas) for the proxy.",
        discussion: """
            Servers listen on 127.0.0.1 only and run as user postgres when invoked as root. `up` writes \
            <dir>/causeway.toml (a proxy config for the cluster) and <dir>/sandbox.env (shell-sourceable ports).
            """,
        subcommands: [Up.self, Status.self, Down.self]
    )

    struct DirOption: ParsableArguments {
        @Option(name: .long, help: "Directory that holds the cluster's data, logs and generated files.")
        var dir: String = ".sandbox"
    }

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create and start the cluster (or report that it is already running).")

        @OptionGroup var location: DirOption

        @Option(name: .long, help: "Number of streaming replicas.")
        var replicas: Int = 2

        @Option(name: .customLong("delay-ms"), help: "recovery_min_apply_delay for the last replica, in milliseconds (0 = none).")
        var delayMs: Int = 0

        @Option(name: .customLong("port-base"), help: "Primary port P; replicas P+1..P+N, proxy P+N+1, metrics P+N+2. Default: free ports.")
        var portBase: Int?

        var options: SandboxOptions {
            SandboxOptions(dir: location.dir, replicas: replicas, delayMs: delayMs, portBase: portBase)
        }

        func validate() throws {
            do {
                try options.validate()
            } catch let error as SandboxError {
                throw ValidationError(error.message)
            }
        }

        func run() throws {
            let summary = try Sandbox.up(options) { line in
                FileHandle.standardError.write(Data("sandbox: \(line)\n".utf8))
            }
            print(summary)
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each server: port, running or not, role, LSN and replication lag.")

        @OptionGroup var location: DirOption

        func run() throws {
            print(try Sandbox.status(dir: location.dir))
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop every server of the cluster (fast shutdown) and remove its directory.")

        @OptionGroup var location: DirOption

        func run() throws {
            guard FileManager.default.fileExists(atPath: location.dir) else {
                print("No sandbox in \(location.dir); nothing to do.")
                return
            }
            try Sandbox.down(dir: location.dir)
            print("Sandbox in \(location.dir) stopped and removed.")
        }
    }
}
