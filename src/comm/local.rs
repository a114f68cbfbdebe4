//! [`LocalComm`]: ranks as threads of one process. The same collectives as MPI's, over shared
//! memory, so a run across N ranks (the sums, the data routes, the sharded problem) can be
//! checked without mpirun.

use super::{all_gather_f64, sum_in_rank_order, Comm};
use crate::error::Result;
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    barrier: Barrier,
    /// What each rank put in for the collective under way.
    slots: Mutex<Vec<Vec<Vec<u8>>>>,
}

/// One rank of a group of threads (see [`LocalComm::group`]).
pub struct LocalComm {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalComm {
    /// `n` ranks; hand one to each thread. Every rank must make the same calls in the same order.
    pub fn group(n: usize) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(n),
            slots: Mutex::new(vec![Vec::new(); n]),
        });
        (0..n)
            .map(|rank| LocalComm {
                rank,
                size: n,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Puts `to` (one buffer per rank) in and takes what each rank put for this one.
    fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        self.shared.slots.lock().expect("a rank panicked")[self.rank] = to;
        self.shared.barrier.wait();
        let out = {
            let slots = self.shared.slots.lock().expect("a rank panicked");
            slots.iter().map(|s| s[self.rank].clone()).collect()
        };
        self.shared.barrier.wait();
        out
    }
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f64(&self, x: &mut [f64]) -> Result<()> {
        let all = all_gather_f64(self, x)?;
        for (j, v) in x.iter_mut().enumerate() {
            let mut s = 0f64;
            for part in &all {
                s += part[j];
            }
            *v = s;
        }
        Ok(())
    }
    fn sum_f32(&self, x: &mut [f32]) -> Result<()> {
        let all = super::all_gather_pod(self, x)?;
        let parts: Vec<&[f32]> = all.iter().map(|p| &p[..]).collect();
        sum_in_rank_order(&parts, x);
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.exchange(vec![mine.to_vec(); self.size]))
    }
    fn all_to_all_bytes(&self, to: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        assert_eq!(to.len(), self.size, "one buffer per rank");
        Ok(self.exchange(to))
    }
    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        panic!(
            "rank {} of {} aborted the group (code {code})",
            self.rank, self.size
        )
    }
}
