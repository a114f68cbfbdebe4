//! The communicator: what several processes (MPI ranks) must agree on, summed in a fixed order.
//!
//! Training under `mpirun` shards the users across ranks; the item rows and the scalars are
//! replicated. `Problem` calls a [`Comm`] after every pass that leaves item-side
//! parts or scalars partial on each rank, so the solvers never see it. [`Single`] is the
//! one-process communicator: every sum is the identity and nothing is sent.
//!
//! Every sum is taken in rank order in f64 on the rank that owns the chunk and sent back, so each
//! rank holds the same bits and a run repeats bit for bit with the same number of processes.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use crate::error::{Error, Result};
use std::ops::Range;

/// Collective operations across the processes of one run. Every rank must make the same calls
/// in the same order (they are collectives).
pub trait Comm {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many processes run.
    fn size(&self) -> usize;
    /// x ← Σ over ranks of x, element by element, each summed in rank order in f64.
    fn sum_f64(&self, x: &mut [f64]) -> Result<()>;
    /// x ← Σ over ranks of x, element by element, each summed in rank order in f64 and rounded
    /// once to f32. Costs 2·(N−1)/N·len·4 bytes in and out per rank (a reduce-scatter, then an
    /// all-gather).
    fn sum_f32(&self, x: &mut [f32]) -> Result<()>;
    /// Every rank's bytes, in rank order.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Sends `to[r]` to rank r; returns what each rank sent to this one, in rank order.
    fn all_to_all_bytes(&self, to: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>;
    /// Waits until every rank has reached it.
    fn barrier(&self) -> Result<()>;
    /// Ends every process of the run with `code` (a rank that failed calls it after telling its
    /// error, so that no rank waits forever in a collective). Never returns.
    fn abort(&self, code: i32) -> !;
    /// True on rank 0, the rank that prints and writes the run's files.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: nothing to send, every sum is the value itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

/// The one-process communicator, for callers that need a `&'static dyn Comm`.
pub static SINGLE: Single = Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f64(&self, _x: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn sum_f32(&self, _x: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn all_to_all_bytes(&self, to: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        Ok(to)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Every rank's values, in rank order.
pub fn all_gather_pod<T: bytemuck::Pod>(comm: &dyn Comm, mine: &[T]) -> Result<Vec<Vec<T>>> {
    Ok(comm
        .all_gather_bytes(bytemuck::cast_slice(mine))?
        .iter()
        .map(|b| bytemuck::pod_collect_to_vec(b))
        .collect())
}

/// Every rank's f64 values, in rank order.
pub fn all_gather_f64(comm: &dyn Comm, mine: &[f64]) -> Result<Vec<Vec<f64>>> {
    all_gather_pod(comm, mine)
}

/// Every rank's u64 values, in rank order.
pub fn all_gather_u64(comm: &dyn Comm, mine: &[u64]) -> Result<Vec<Vec<u64>>> {
    all_gather_pod(comm, mine)
}

/// (the sum of `n` over the ranks before this one, the sum over all ranks): where this rank's
/// items start in an order that runs through the ranks in turn, and how many there are.
pub fn offset(comm: &dyn Comm, n: u64) -> Result<(u64, u64)> {
    let all = all_gather_u64(comm, &[n])?;
    let before = all[..comm.rank()].iter().map(|v| v[0]).sum();
    Ok((before, all.iter().map(|v| v[0]).sum()))
}

/// The deterministic sum behind [`Comm::sum_f32`]: `parts[r]` is rank r's piece; each element is
/// summed in rank order in f64 and rounded once.
pub fn sum_in_rank_order(parts: &[&[f32]], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let mut s = 0f64;
        for p in parts {
            s += p[j] as f64;
        }
        *o = s as f32;
    }
}

/// Contiguous ranges of `0..weights.len()`, one per rank, balanced by total weight (each range
/// ends at the first row whose running total reaches its share). Depends only on the weights and
/// `parts`, so every rank computes the same ranges.
pub fn balanced_ranges(weights: &[u64], parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let total: u64 = weights.iter().sum();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0u64;
    let mut row = 0;
    for k in 1..=parts {
        if k == parts {
            out.push(start..weights.len());
            break;
        }
        // Share of ranks 0..k, rounded up, so that no range is asked for more than it holds.
        let target = (total as u128 * k as u128).div_ceil(parts as u128) as u64;
        while row < weights.len() && acc < target {
            acc += weights[row];
            row += 1;
        }
        out.push(start..row);
        start = row;
    }
    out
}

/// How many processes the launcher (mpirun, srun, mpiexec) started, from its environment; 1 when
/// none did.
pub fn launched_size() -> usize {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_NTASKS",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
    .filter(|&n| n >= 1)
    .unwrap_or(1)
}

/// The communicator of this process: MPI when built with the `mpi` feature and started by a
/// launcher with more than one process, [`Single`] otherwise. Launched with several processes
/// but built without MPI is an error (the ranks would otherwise each train the whole model and
/// write the same folder).
pub fn world() -> Result<Box<dyn Comm>> {
    let n = launched_size();
    if n <= 1 {
        return Ok(Box::new(Single));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(mpi::MpiComm::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(Error::Input(format!(
            "started by an MPI launcher with {n} processes, but this sslf was built without \
             MPI; rebuild it with `cargo build --release --features mpi`, or run one process"
        )))
    }
}

/// Refuses a feature that runs in one process only.
pub fn single_process_only(comm: &dyn Comm, what: &str) -> Result<()> {
    if comm.size() > 1 {
        return Err(Error::Input(format!(
            "{what} runs in one process only; this run has {} (run it without mpirun)",
            comm.size()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_ranges_cover_every_row_once_and_balance_weight() {
        let w: Vec<u64> = (0..100).map(|i| (i % 7) as u64 + 1).collect();
        for parts in 1..6 {
            let r = balanced_ranges(&w, parts);
            assert_eq!(r.len(), parts);
            assert_eq!(r[0].start, 0);
            assert_eq!(r.last().unwrap().end, 100);
            for k in 1..parts {
                assert_eq!(r[k - 1].end, r[k].start);
            }
            let total: u64 = w.iter().sum();
            for rr in &r {
                let s: u64 = w[rr.clone()].iter().sum();
                assert!(s <= total / parts as u64 + 8, "{parts}: {rr:?} holds {s}");
            }
        }
        // More ranks than rows: the trailing ranges are empty.
        let r = balanced_ranges(&[5, 5], 4);
        assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), 2);
    }

    #[test]
    fn rank_order_sum_rounds_once() {
        let a = [1e8f32, 1.0];
        let b = [1.0f32, 2.0];
        let c = [-1e8f32, 3.0];
        let mut out = [0f32; 2];
        sum_in_rank_order(&[&a, &b, &c], &mut out);
        assert_eq!(out, [1.0, 6.0]);
    }
}
