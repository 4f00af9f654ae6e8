//! The demo's terminal output: a row of shares per time window, and bars.

use sidelb_tests::harness::Tally;

const BAR_WIDTH: u64 = 40;

/// Share of `tally`'s calls served by `pod`, in percent (0 when no calls).
pub fn share(tally: &Tally, pod: &str) -> u64 {
    match tally.total() {
        0 => 0,
        total => (tally.served_by(pod) * 100 + total / 2) / total,
    }
}

/// Failed calls: everything that did not end OK.
pub fn failed(tally: &Tally) -> u64 {
    tally.total() - tally.ok()
}

pub fn print_header(pods: &[String]) {
    let mut line = format!("  {:>9} ", "window");
    for pod in pods {
        line.push_str(&format!("{pod:>7}"));
    }
    line.push_str(&format!("{:>11}{:>8}", "requests", "failed"));
    println!("{line}");
}

/// One row: each pod's share of the window's calls (`-` for pods not yet in
/// the service), the number of calls, the failures.
pub fn print_row(label: &str, tally: &Tally, pods: &[String]) {
    let mut line = format!("  {label:>9} ");
    for pod in pods {
        if tally.served_by(pod) == 0 && !tally.backends().contains_key(pod) {
            line.push_str(&format!("{:>7}", "-"));
        } else {
            line.push_str(&format!("{:>6}%", share(tally, pod)));
        }
    }
    line.push_str(&format!("{:>11}{:>8}", tally.total(), failed(tally)));
    println!("{line}");
}

/// One bar per pod, proportional to its share of `tally`.
pub fn print_bars(tally: &Tally, pods: &[String]) {
    for pod in pods {
        let percent = share(tally, pod);
        let filled = (percent * BAR_WIDTH + 50) / 100;
        let bar = "█".repeat(filled as usize);
        let pad = " ".repeat((BAR_WIDTH - filled) as usize);
        println!(
            "    {pod:<6} {bar}{pad} {percent:>3}%  ({} requests)",
            tally.served_by(pod)
        );
    }
}
