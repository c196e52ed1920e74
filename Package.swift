// swift-tools-version:6.0
import PackageDescription

// The per-message path is written to be exclusive by construction (single-threaded loops, value
// types); release builds skip the runtime exclusivity checks that showed up in profiles.
let fastPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Causeway",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "causeway", targets: ["causeway"]),
        .executable(name: "causeway-bench", targets: ["causeway-bench"]),
    ],
    dependencies: [
        // Command-line parsing for `causeway` and `causeway-bench`: subcommands, --help, validation.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // causeway-bench's latency percentiles: HdrHistogram records millions of samples in fixed
        // memory with 3 significant digits, and merges per-thread histograms exactly.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibUV", path: "Sources/CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "CShims", dependencies: ["CLibUV", "COpenSSL"], path: "Sources/CShims"),
        .target(name: "Wire", path: "Sources/Wire", swiftSettings: fastPath),
        .target(name: "Router", path: "Sources/Router", swiftSettings: fastPath),
        .target(name: "LagMonitor", dependencies: ["CLibUV", "CLibPQ", "CShims", "Router"], path: "Sources/LagMonitor"),
        .target(
            name: "Proxy",
            dependencies: ["Wire", "Router", "LagMonitor", "CLibUV", "COpenSSL", "CShims"],
            path: "Sources/Proxy",
            swiftSettings: fastPath
        ),
        // The local PostgreSQL cluster of `causeway sandbox` and of the tests: no proxy code.
        .target(name: "Sandbox", path: "Sources/Sandbox"),
        .executableTarget(
            name: "causeway",
            dependencies: ["Proxy", "Sandbox", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/causeway"
        ),
        // causeway-bench: its logic (workload, verification, schedule, reports) in BenchCore, pure and
        // unit-tested; the libpq/libuv driver and the CLI in the executable. Both live under bench/,
        // beside the measuring scripts.
        .target(
            name: "BenchCore",
            dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "bench/BenchCore"
        ),
        .executableTarget(
            name: "causeway-bench",
            dependencies: [
                "BenchCore", "CLibUV", "CLibPQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "bench/causeway-bench"
        ),
        .testTarget(name: "WireTests", dependencies: ["Wire"], path: "Tests/WireTests"),
        .testTarget(name: "RouterTests", dependencies: ["Router"], path: "Tests/RouterTests"),
        .testTarget(
            name: "LagMonitorTests",
            dependencies: ["LagMonitor", "Router", "Sandbox", "CLibPQ", "CShims"],
            path: "Tests/LagMonitorTests"
        ),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Wire"], path: "Tests/ProxyTests"),
        .testTarget(name: "BenchTests", dependencies: ["BenchCore"], path: "Tests/BenchTests"),
    ],
    swiftLanguageModes: [.v6]
)
