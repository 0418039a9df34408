//! Where the worker threads run and how they are prioritised: nginx's `worker_cpu_affinity` and
//! `worker_priority`, applied to each worker thread as nginx applies them to each worker
//! process when it starts (`ngx_worker_process_init`): `setpriority`, then `sched_setaffinity`
//! with the CPUs `ngx_get_cpu_affinity(n)` gives worker n. As in nginx, a failure is logged and
//! the worker serves on, unpinned or at its old priority.
//!
//! The worker threads (`workers`), which serve HTTP and stream connections alike, are placed as
//! they start. Other threads (health checks, the admin listener) stay where they are, as
//! nginx's master process does.

use crate::config::{CpuAffinity, Global};

/// The placement of every worker thread.
pub struct Placement {
    affinity: Option<CpuAffinity>,
    priority: Option<i32>,
    /// The CPUs online, which `auto` spreads over (nginx's `ngx_ncpu`).
    online: usize,
}

impl Placement {
    pub fn new(global: &Global) -> Placement {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Placement {
            affinity: global.worker_cpu_affinity.clone(),
            priority: global.worker_priority,
            online: usize::try_from(online).unwrap_or(1).max(1),
        }
    }

    /// The CPUs worker `index` may run on, in increasing order; `None` for any.
    pub fn cpus(&self, index: usize) -> Option<Vec<usize>> {
        match self.affinity.as_ref()? {
            CpuAffinity::Auto => Some(vec![index % self.online]),
            CpuAffinity::AutoFrom(cpus) => {
                let mut cpus = cpus.clone();
                cpus.sort_unstable();
                cpus.dedup();
                // An empty mask pins nothing, as in nginx.
                (!cpus.is_empty()).then(|| vec![cpus[index % cpus.len()]])
            }
            CpuAffinity::PerWorker(sets) => {
                let mut cpus = sets.get(index).or(sets.last())?.clone();
                cpus.sort_unstable();
                cpus.dedup();
                Some(cpus)
            }
        }
    }

    /// Places the calling thread as worker `index`.
    pub fn place_this_thread(&self, index: usize) {
        // nginx leaves a priority of 0 alone too: the process keeps the one it was started with.
        if let Some(priority) = self.priority.filter(|p| *p != 0) {
            set_priority(priority);
        }
        if let Some(cpus) = self.cpus(index) {
            set_affinity(&cpus);
        }
    }
}

fn set_priority(priority: i32) {
    // SAFETY: gettid has no preconditions. On Linux, PRIO_PROCESS with a thread id sets the nice
    // value of that one thread.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, priority) } == -1 {
        let e = std::io::Error::last_os_error();
        let errno = e.raw_os_error().unwrap_or(0);
        // nginx's master runs as root; the packaged unit runs the appliance without the
        // capability a priority above the normal one takes.
        let hint = if priority < 0 && matches!(errno, libc::EPERM | libc::EACCES) {
            "; a negative worker_priority needs CAP_SYS_NICE"
        } else {
            ""
        };
        tracing::error!("setpriority({priority}) failed ({errno}: {e}){hint}");
    }
}

fn set_affinity(cpus: &[usize]) {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        tracing::info!("sched_setaffinity(): using cpu #{cpu}");
        // CPU numbers past the set's size are refused when the config is validated.
        // SAFETY: CPU_SET writes one bit of `set`, within its size for cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == -1 {
        let e = std::io::Error::last_os_error();
        tracing::error!(
            "sched_setaffinity() failed ({}: {e})",
            e.raw_os_error().unwrap_or(0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(affinity: CpuAffinity, online: usize) -> Placement {
        Placement {
            affinity: Some(affinity),
            priority: None,
            online,
        }
    }

    fn cpus(p: &Placement, workers: usize) -> Vec<Option<Vec<usize>>> {
        (0..workers).map(|i| p.cpus(i)).collect()
    }

    #[test]
    fn auto_gives_each_worker_one_cpu_in_turn_and_wraps() {
        let p = placement(CpuAffinity::Auto, 4);
        assert_eq!(
            cpus(&p, 6),
            [0, 1, 2, 3, 0, 1].map(|c| Some(vec![c])).to_vec()
        );
    }

    #[test]
    fn auto_with_a_mask_uses_only_its_cpus_in_increasing_order() {
        // nginx: worker_cpu_affinity auto 101010 over CPUs 1, 3 and 5.
        let p = placement(CpuAffinity::AutoFrom(vec![5, 1, 3]), 8);
        assert_eq!(cpus(&p, 4), [1, 3, 5, 1].map(|c| Some(vec![c])).to_vec());
        assert_eq!(placement(CpuAffinity::AutoFrom(vec![]), 8).cpus(0), None);
    }

    #[test]
    fn masks_go_to_workers_in_order_and_the_last_serves_the_rest() {
        let p = placement(CpuAffinity::PerWorker(vec![vec![0], vec![1, 2]]), 4);
        assert_eq!(
            cpus(&p, 3),
            vec![Some(vec![0]), Some(vec![1, 2]), Some(vec![1, 2])]
        );
    }

    #[test]
    fn without_the_directive_a_worker_runs_anywhere() {
        let p = Placement::new(&Global::default());
        assert_eq!(p.cpus(0), None);
    }
}
