//! What the kernel says about a process: CPU time (`/proc/PID/stat` utime + stime, all threads),
//! resident memory (`/proc/PID/status` VmRSS), and CPU pinning through `taskset`; and about the
//! machine: CPU time the hypervisor stole (`/proc/stat`).

use std::{process::Command, sync::OnceLock, time::Duration};

/// utime + stime of `pid` in clock ticks, from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes, from the text of `/proc/PID/status`.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when it cannot be asked).
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU time `pid` has used so far (every thread, live or exited), or `None` when it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    let per_second = ticks_per_second();
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_status_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// VmHWM (the peak resident set size) in bytes, from the text of `/proc/PID/status`.
pub fn parse_status_rss_peak(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The largest resident set size `pid` has had, in bytes.
pub fn rss_peak_bytes(pid: u32) -> Option<u64> {
    parse_status_rss_peak(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU time used by a set of processes between [`CpuMeter::start`] and [`CpuMeter::stop`].
/// A process that exits in between counts up to its last reading (i.e. not at all).
#[derive(Clone, Debug)]
pub struct CpuMeter {
    start: Vec<(u32, Duration)>,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            start: pids
                .iter()
                .filter_map(|&pid| Some((pid, cpu_time(pid)?)))
                .collect(),
        }
    }

    pub fn stop(&self) -> Duration {
        self.start
            .iter()
            .filter_map(|(pid, before)| Some(cpu_time(*pid)?.saturating_sub(*before)))
            .sum()
    }
}

/// `(steal, all)` clock ticks of the whole machine, from the aggregate `cpu` line of `/proc/stat`
/// (user nice system idle iowait irq softirq steal …; guest time is already inside user).
pub fn parse_proc_stat_steal(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

/// The share of the machine's CPU time the hypervisor stole between [`StealMeter::start`] and
/// [`StealMeter::percent`]: a virtual CPU that wanted to run while its host ran someone else.
/// Large values mean the absolute figures of that span (and the noise of its ratios) say more
/// about the neighbours than about Tenantry.
#[derive(Clone, Copy, Debug)]
pub struct StealMeter {
    start: Option<(u64, u64)>,
}

impl StealMeter {
    fn read() -> Option<(u64, u64)> {
        parse_proc_stat_steal(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    pub fn start() -> Self {
        Self {
            start: Self::read(),
        }
    }

    /// Stolen ticks as a percentage of all ticks since the start (`None` without `/proc/stat`).
    pub fn percent(&self) -> Option<f64> {
        let (steal0, all0) = self.start?;
        let (steal1, all1) = Self::read()?;
        let all = all1.checked_sub(all0)?;
        (all > 0).then(|| steal1.saturating_sub(steal0) as f64 * 100.0 / all as f64)
    }
}

/// Pins every thread of `pid` to `cpus` (a `taskset -c` list); threads created later inherit it.
pub fn pin(pid: u32, cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("run taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (tokio worker) 1) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_rss_is_read_in_bytes() {
        let status = "Name:\tentitlement\nVmPeak:\t  900 kB\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
        let status = "Name:\tx\nVmHWM:\t   4096 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_status_rss_peak(status), Some(4 * 1024 * 1024));
        assert_eq!(parse_status_rss_peak("VmRSS:\t 1 kB\n"), None);
    }

    #[test]
    fn steal_is_the_eighth_tick_count_of_the_cpu_line() {
        let stat = "cpu  100 5 50 800 10 0 5 30 0 0\ncpu0 50 2 25 400 5 0 2 15 0 0\n";
        assert_eq!(parse_proc_stat_steal(stat), Some((30, 1000)));
        assert_eq!(parse_proc_stat_steal("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat_steal("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_resident_set() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_time(u32::MAX).is_none());
    }
}
