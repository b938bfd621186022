//! Where a run's CPU went: the CPU time each program of the pipeline used during the run, per
//! order, how busy the machine was, how much of its time the hypervisor took away (steal), and
//! how often the kernel switched from one thread to another per order (the machine's and each
//! single-process program's), from Linux's `/proc` (the `procfs` crate). A switch is a hand-off
//! between threads or a wait: on two cores shared by every program they cost more than the work
//! they carry, so they are the first thing to count when CPU per order grows at low rates.
//!
//! On this project's 2-core machine every program shares the same cores, so a run's latency
//! depends on the CPU all of them spend per order: this is the profile that says which one to
//! look at first (BENCHMARKS.md). PostgreSQL runs a process per connection: its server is
//! counted as its main process (the postmaster), the backends alive at either end of the run,
//! and the backends that ended meanwhile (their time passes to the postmaster's children's
//! time when it reaps them).

use std::collections::BTreeMap;

use procfs::CurrentSI;
use procfs::process::Process;
use serde::Serialize;

use crate::cli::Target;

/// How to count a program's CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Count {
    /// The process and the children it has reaped.
    Process(u32),
    /// The process, the children it has reaped, and its live children.
    Tree(u32),
}

/// The programs of a run, by name.
#[derive(Clone, Debug)]
pub struct Programs {
    programs: Vec<(&'static str, Count)>,
}

/// CPU time used so far, in clock ticks: per program, and the machine's busy, stolen and total
/// time.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    programs: BTreeMap<&'static str, u64>,
    /// Context switches so far of each single-process program, all its live threads together.
    switches: BTreeMap<&'static str, u64>,
    /// Context switches of the whole machine since boot.
    machine_switches: u64,
    machine_busy: u64,
    machine_steal: u64,
    machine_total: u64,
}

/// CPU time per order of each program during a run, and how busy the machine was.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuReport {
    /// Microseconds of CPU per final order, by program (loadgen included: it shares the cores).
    pub per_order_us: BTreeMap<String, f64>,
    /// The sum over the programs.
    pub total_per_order_us: f64,
    /// Share of the machine's CPU time that was not idle, all cores together.
    pub machine_busy_percent: f64,
    /// Share of the machine's CPU time that the hypervisor gave to other guests while this one
    /// had work to run ("steal", counted in the busy share). A virtual machine's cores can be
    /// taken away for milliseconds at a time: every program waits, whatever it does, and the
    /// latency tails show it.
    pub machine_steal_percent: f64,
    /// Context switches per final order of each single-process program (the services and
    /// loadgen), voluntary (a wait: for a socket, a lock, a channel) and involuntary (preempted)
    /// together, over the threads alive at the end of the run.
    pub switches_per_order: BTreeMap<String, f64>,
    /// Context switches per final order of the whole machine, every program's included.
    pub machine_switches_per_order: f64,
}

impl Programs {
    /// The services, PostgreSQL and RabbitMQ whose PIDs `target` gives, and loadgen itself.
    pub fn of(target: &Target) -> Self {
        let mut programs = vec![("loadgen", Count::Process(std::process::id()))];
        let named = [
            (
                "order_service",
                target
                    .order_service_pid
                    .map(Count::Process)
                    .into_iter()
                    .collect(),
            ),
            (
                "processor_service",
                target
                    .processor_service_pid
                    .iter()
                    .map(|&pid| Count::Process(pid))
                    .collect(),
            ),
            (
                "postgresql",
                target.postgres_pid.map(Count::Tree).into_iter().collect(),
            ),
            (
                "rabbitmq",
                target
                    .rabbitmq_pid
                    .iter()
                    .map(|&pid| Count::Tree(pid))
                    .collect::<Vec<_>>(),
            ),
        ];
        // A name given several processes (replicas, a cluster's nodes) counts their sum.
        for (name, counts) in named {
            for count in counts {
                programs.push((name, count));
            }
        }
        Self { programs }
    }

    /// The CPU time used so far. A program that cannot be read (gone, or not ours to read) is
    /// left out, and so out of the report.
    pub fn sample(&self) -> Sample {
        let mut programs = BTreeMap::new();
        // The live children of every counted tree, found in one pass over /proc.
        let trees: Vec<i32> = self
            .programs
            .iter()
            .filter_map(|(_, count)| match count {
                Count::Tree(pid) => Some(*pid as i32),
                Count::Process(_) => None,
            })
            .collect();
        let mut children: BTreeMap<i32, u64> = BTreeMap::new();
        if !trees.is_empty()
            && let Ok(all) = procfs::process::all_processes()
        {
            for stat in all.flatten().filter_map(|process| process.stat().ok()) {
                if trees.contains(&stat.ppid) {
                    *children.entry(stat.ppid).or_default() += stat.utime + stat.stime;
                }
            }
        }
        // Each process is read once, so two programs given the same PID (the tests run the
        // services inside loadgen's own process) report the same time, not two ticks apart.
        let mut own_time: BTreeMap<u32, Option<u64>> = BTreeMap::new();
        for (name, count) in &self.programs {
            let (Count::Process(pid) | Count::Tree(pid)) = *count;
            let own = *own_time.entry(pid).or_insert_with(|| {
                Process::new(pid as i32)
                    .and_then(|process| process.stat())
                    .ok()
                    .map(|stat| {
                        stat.utime
                            + stat.stime
                            + stat.cutime.max(0) as u64
                            + stat.cstime.max(0) as u64
                    })
            });
            let Some(own) = own else {
                continue;
            };
            let live_children = match count {
                Count::Tree(pid) => children.get(&(*pid as i32)).copied().unwrap_or(0),
                Count::Process(_) => 0,
            };
            *programs.entry(*name).or_default() += own + live_children;
        }
        let mut switches = BTreeMap::new();
        for (name, count) in &self.programs {
            if let Count::Process(pid) = *count
                && let Some(n) = thread_switches(pid)
            {
                *switches.entry(*name).or_default() += n;
            }
        }
        let stats = procfs::KernelStats::current().ok();
        let machine_switches = stats.as_ref().map_or(0, |stats| stats.ctxt);
        let (machine_busy, machine_steal, machine_total) = stats
            .map(|stats| {
                let cpu = stats.total;
                let idle = cpu.idle + cpu.iowait.unwrap_or(0);
                let steal = cpu.steal.unwrap_or(0);
                let total = cpu.user
                    + cpu.nice
                    + cpu.system
                    + idle
                    + cpu.irq.unwrap_or(0)
                    + cpu.softirq.unwrap_or(0)
                    + steal;
                (total.saturating_sub(idle), steal, total)
            })
            .unwrap_or((0, 0, 0));
        Sample {
            programs,
            switches,
            machine_switches,
            machine_busy,
            machine_steal,
            machine_total,
        }
    }
}

/// The context switches of all live threads of `pid`; `None` if it cannot be read.
fn thread_switches(pid: u32) -> Option<u64> {
    let tasks = Process::new(pid as i32).ok()?.tasks().ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|task| task.status().ok())
            .map(|status| {
                status.voluntary_ctxt_switches.unwrap_or(0)
                    + status.nonvoluntary_ctxt_switches.unwrap_or(0)
            })
            .sum(),
    )
}

/// How much each counter named in both samples grew, times `scale`.
fn growth(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
    scale: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, &now)| {
            let start = before.get(name)?;
            Some((
                (*name).to_owned(),
                now.saturating_sub(*start) as f64 * scale,
            ))
        })
        .collect()
}

/// What happened between two samples, per order; `None` without orders.
pub fn per_order(
    before: &Sample,
    after: &Sample,
    orders: u64,
    ticks_per_second: u64,
) -> Option<CpuReport> {
    if orders == 0 || ticks_per_second == 0 {
        return None;
    }
    let us_per_tick = 1e6 / ticks_per_second as f64;
    let per_order_us = growth(
        &before.programs,
        &after.programs,
        us_per_tick / orders as f64,
    );
    let switches_per_order = growth(&before.switches, &after.switches, 1.0 / orders as f64);
    let machine_switches_per_order = after
        .machine_switches
        .saturating_sub(before.machine_switches) as f64
        / orders as f64;
    let total = after.machine_total.saturating_sub(before.machine_total);
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    let steal = after.machine_steal.saturating_sub(before.machine_steal);
    let share = |ticks: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * ticks as f64 / total as f64
        }
    };
    Some(CpuReport {
        total_per_order_us: per_order_us.values().sum(),
        per_order_us,
        machine_busy_percent: share(busy),
        machine_steal_percent: share(steal),
        switches_per_order,
        machine_switches_per_order,
    })
}

/// The median of each figure over several runs' reports (runs without one are skipped).
pub fn median<'a>(reports: impl IntoIterator<Item = &'a CpuReport>) -> Option<CpuReport> {
    let reports: Vec<&CpuReport> = reports.into_iter().collect();
    let first = reports.first()?;
    let of = |figure: &dyn Fn(&CpuReport) -> Option<f64>| {
        let mut values: Vec<f64> = reports.iter().filter_map(|r| figure(r)).collect();
        crate::report::median(&mut values)
    };
    // Program by program, as the first report names them.
    let by_program = |figures: fn(&CpuReport) -> &BTreeMap<String, f64>| {
        figures(first)
            .keys()
            .map(|name| (name.clone(), of(&|r| figures(r).get(name).copied())))
            .collect()
    };
    let per_order_us = by_program(|r| &r.per_order_us);
    let switches_per_order = by_program(|r| &r.switches_per_order);
    Some(CpuReport {
        per_order_us,
        total_per_order_us: of(&|r| Some(r.total_per_order_us)),
        machine_busy_percent: of(&|r| Some(r.machine_busy_percent)),
        machine_steal_percent: of(&|r| Some(r.machine_steal_percent)),
        switches_per_order,
        machine_switches_per_order: of(&|r| Some(r.machine_switches_per_order)),
    })
}

/// The clock ticks per second of `/proc`'s CPU times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

impl CpuReport {
    /// One line: `postgresql 650, rabbitmq 700, ... = 2250 µs per order; machine 82% busy (4.0%
    /// stolen by the hypervisor); context switches per order: machine 40.0, order_service 9.5,
    /// ...`.
    pub fn text(&self) -> String {
        let mut by_cost: Vec<(&String, &f64)> = self.per_order_us.iter().collect();
        by_cost.sort_by(|a, b| b.1.total_cmp(a.1));
        let programs: Vec<String> = by_cost
            .iter()
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect();
        let switches: Vec<String> = std::iter::once(("machine", self.machine_switches_per_order))
            .chain(
                self.switches_per_order
                    .iter()
                    .map(|(name, n)| (name.as_str(), *n)),
            )
            .map(|(name, n)| format!("{name} {n:.1}"))
            .collect();
        format!(
            "{} = {:.0} µs per order; machine {:.0}% busy ({:.1}% stolen by the hypervisor); context switches per order: {}",
            programs.join(", "),
            self.total_per_order_us,
            self.machine_busy_percent,
            self.machine_steal_percent,
            switches.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sample(programs: &[(&'static str, u64)], busy: u64, steal: u64, total: u64) -> Sample {
        Sample {
            programs: programs.iter().copied().collect(),
            switches: BTreeMap::new(),
            machine_switches: 0,
            machine_busy: busy,
            machine_steal: steal,
            machine_total: total,
        }
    }

    #[test]
    fn cpu_per_order_is_the_difference_over_the_orders() {
        let mut before = sample(
            &[("postgresql", 1_000), ("loadgen", 10)],
            5_000,
            300,
            10_000,
        );
        before.switches = [("loadgen", 500)].into();
        before.machine_switches = 90_000;
        let mut after = sample(
            &[("postgresql", 1_130), ("loadgen", 30), ("rabbitmq", 99)],
            5_150,
            309,
            10_200,
        );
        after.switches = [("loadgen", 3_000), ("order_service", 10)].into();
        after.machine_switches = 130_000;
        // 100 ticks per second: a tick is 10 ms.
        let report = per_order(&before, &after, 1_000, 100).unwrap();
        assert_eq!(report.per_order_us["postgresql"], 1_300.0);
        assert_eq!(report.per_order_us["loadgen"], 200.0);
        // Not sampled at the start: not reported.
        assert!(!report.per_order_us.contains_key("rabbitmq"));
        assert_eq!(report.total_per_order_us, 1_500.0);
        assert_eq!(report.machine_busy_percent, 75.0);
        // 9 of the 200 ticks: what was stolen during the run, not since boot.
        assert_eq!(report.machine_steal_percent, 4.5);
        assert_eq!(report.switches_per_order["loadgen"], 2.5);
        assert!(!report.switches_per_order.contains_key("order_service"));
        assert_eq!(report.machine_switches_per_order, 40.0);
        assert_eq!(
            report.text(),
            "postgresql 1300, loadgen 200 = 1500 µs per order; machine 75% busy \
             (4.5% stolen by the hypervisor); context switches per order: machine 40.0, loadgen 2.5"
        );
        assert_eq!(per_order(&before, &after, 0, 100), None);
    }

    #[test]
    fn medians_of_several_runs() {
        let run = |pg: f64, busy: f64| CpuReport {
            per_order_us: [("postgresql".to_owned(), pg)].into(),
            total_per_order_us: pg,
            machine_busy_percent: busy,
            machine_steal_percent: busy / 10.0,
            switches_per_order: [("order_service".to_owned(), busy / 10.0)].into(),
            machine_switches_per_order: busy,
        };
        let runs = [run(600.0, 80.0), run(700.0, 90.0), run(650.0, 70.0)];
        let median = median(&runs).unwrap();
        assert_eq!(median.per_order_us["postgresql"], 650.0);
        assert_eq!(median.total_per_order_us, 650.0);
        assert_eq!(median.machine_busy_percent, 80.0);
        assert_eq!(median.machine_steal_percent, 8.0);
        assert_eq!(median.switches_per_order["order_service"], 8.0);
        assert_eq!(median.machine_switches_per_order, 80.0);
        assert_eq!(super::median(&[]), None);
    }

    #[test]
    fn the_switches_of_every_thread_of_a_process_are_counted() {
        let programs = Programs {
            programs: vec![("me", Count::Process(std::process::id()))],
        };
        let before = programs.sample();
        // A thread of this process that waits 20 times: 20 voluntary switches at least.
        std::thread::spawn(|| {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Still alive when sampled below: the count is of live threads.
            std::thread::park_timeout(Duration::from_secs(5));
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let after = programs.sample();
            let switched = after.switches["me"] - before.switches["me"];
            if switched >= 20 {
                assert!(after.machine_switches >= before.machine_switches + switched);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {switched} switches counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_tree_counts_the_children_it_reaped() {
        let me = std::process::id();
        let programs = Programs {
            programs: vec![("tree", Count::Tree(me))],
        };
        let before = programs.sample();
        // A child that burns CPU (well over one clock tick), then is reaped.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = programs.sample();
        assert!(
            after.programs["tree"] > before.programs["tree"],
            "{before:?} {after:?}"
        );
        assert!(after.machine_total > before.machine_total);
    }

    #[test]
    fn programs_sharing_a_pid_are_read_once_per_sample() {
        let pid = std::process::id();
        let target = Target {
            url: String::new(),
            amqp_url: String::new(),
            exchange: String::new(),
            order_service_pid: Some(pid),
            processor_service_pid: vec![pid],
            postgres_pid: None,
            rabbitmq_pid: Vec::new(),
            tokens: Default::default(),
        };
        let programs = Programs::of(&target);
        // A thread keeps the process's CPU time moving while the samples are taken, so reading
        // it apart for each name would sooner or later straddle a clock tick.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let first = programs.sample().programs["loadgen"];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut samples = 0;
        loop {
            let sample = programs.sample();
            let loadgen = sample.programs["loadgen"];
            assert_eq!(sample.programs["order_service"], loadgen, "{sample:?}");
            assert_eq!(sample.programs["processor_service"], loadgen, "{sample:?}");
            samples += 1;
            if (loadgen >= first + 20 && samples >= 1_000) || Instant::now() > deadline {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(samples >= 1_000);
    }

    #[test]
    fn programs_without_a_pid_are_not_counted() {
        let target = Target {
            url: String::new(),
            amqp_url: String::new(),
            exchange: String::new(),
            order_service_pid: None,
            processor_service_pid: vec![std::process::id()],
            postgres_pid: None,
            rabbitmq_pid: Vec::new(),
            tokens: Default::default(),
        };
        let names: Vec<&str> = Programs::of(&target)
            .programs
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(names, ["loadgen", "processor_service"]);
    }
}
