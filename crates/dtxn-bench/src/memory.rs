//! Resident memory of this process, from `/proc/self/status`.

/// `VmRSS` and `VmHWM` (peak RSS) in KiB; `None` where `/proc` is not
/// available (not Linux).
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Current `VmRSS` in KiB, or 0 where unknown.
pub fn current_kib() -> u64 {
    rss_kib().map_or(0, |(rss, _)| rss)
}
