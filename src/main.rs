//! The `tracecov` binary: parses arguments, sets up logging, and hands over to the library.

use mimalloc::MiMalloc;

// mimalloc roughly doubles OTLP decode speed over the system allocator (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    tracecov::cli::main()
}
