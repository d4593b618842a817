//! CPU time of a process, from `/proc/<pid>/stat` (user + system, children excluded), for the
//! CPU-µs-per-request figure and its share spent in the kernel.

use std::time::Duration;

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless configured otherwise).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The CPU time a process has used so far (all its threads), split as the kernel counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In the process's own code and its libraries.
    pub user: Duration,
    /// In the kernel on the process's behalf: system calls (socket sends and receives, waits,
    /// `fdatasync`), page faults, and the network stack's work done in its context.
    pub system: Duration,
}

impl CpuTime {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was used between `self` and a later reading.
    pub fn until(self, later: CpuTime) -> CpuTime {
        CpuTime { user: later.user.saturating_sub(self.user), system: later.system.saturating_sub(self.system) }
    }
}

/// The CPU time `pid` has used so far (all its threads).
pub fn cpu_time(pid: u32, ticks: u64) -> anyhow::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("unreadable stat of {pid}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3; utime is field 14 and stime 15 (1-based in proc(5)).
    let utime: u64 = f.get(11).ok_or_else(|| anyhow::anyhow!("no utime"))?.parse()?;
    let stime: u64 = f.get(12).ok_or_else(|| anyhow::anyhow!("no stime"))?.parse()?;
    let at = |t: u64| Duration::from_micros(t * 1_000_000 / ticks.max(1));
    Ok(CpuTime { user: at(utime), system: at(stime) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let t = ticks_per_second();
        let me = std::process::id();
        let before = cpu_time(me, t).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        let after = cpu_time(me, t).unwrap();
        assert!(after.total() > before.total(), "{before:?} → {after:?}");
        // A loop of arithmetic runs in user space.
        assert!(before.until(after).user > Duration::ZERO, "{before:?} → {after:?}");
    }
}
