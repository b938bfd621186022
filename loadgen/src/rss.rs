//! Peak resident memory of a process, from Linux's `/proc/PID/status` (`VmHWM`).

/// Peak RSS in bytes, if the process exists and the kernel reports it.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// Current RSS in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_field(&status, "VmRSS:")
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_field(status, "VmHWM:")
}

fn parse_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_vm_hwm("nothing"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
