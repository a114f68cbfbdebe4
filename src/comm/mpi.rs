//! [`MpiComm`]: the communicator over MPI (the `mpi` feature; rsmpi over the system's MPI).
//!
//! Only the thread that initialised MPI calls it (the training loop's thread), so MPI is asked
//! for `Threading::Funneled`. Collectives move at most [`WINDOW`] elements per call, which keeps
//! every count inside MPI's `int`.

use super::{sum_in_rank_order, Comm};
use crate::error::{Error, Result};
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

/// Most elements per rank in one collective call.
const WINDOW: usize = 1 << 24;

/// `b` in an allocated buffer (at least one byte): an empty slice's dangling pointer is 0x1,
/// which OpenMPI takes for MPI_IN_PLACE.
fn real(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.len().max(1));
    v.extend_from_slice(b);
    v
}

/// The world communicator of an `mpirun` launch. Dropping it finalises MPI.
pub struct MpiComm {
    world: SimpleCommunicator,
    // Held for its Drop (MPI_Finalize), after `world`.
    _universe: Universe,
}

impl MpiComm {
    /// Initialises MPI. An error when MPI was already initialised in this process.
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::Device("MPI was already initialised in this process".into()))?;
        Ok(MpiComm {
            world: universe.world(),
            _universe: universe,
        })
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f64(&self, x: &mut [f64]) -> Result<()> {
        let n = self.size();
        for win in x.chunks_mut(WINDOW) {
            let len = win.len();
            let mut all = vec![0f64; len * n];
            self.world.all_gather_into(&win[..], &mut all[..]);
            for (j, w) in win.iter_mut().enumerate() {
                let mut s = 0f64;
                for r in 0..n {
                    s += all[r * len + j];
                }
                *w = s;
            }
        }
        Ok(())
    }

    fn sum_f32(&self, x: &mut [f32]) -> Result<()> {
        let n = self.size();
        for win in x.chunks_mut(WINDOW) {
            // Rank r sums chunk r of every rank's piece in rank order (a reduce-scatter), then
            // every rank gathers the summed chunks.
            let chunk = win.len().div_ceil(n);
            let mut send = vec![0f32; chunk * n];
            send[..win.len()].copy_from_slice(win);
            let mut recv = vec![0f32; chunk * n];
            self.world.all_to_all_into(&send[..], &mut recv[..]);
            let parts: Vec<&[f32]> = recv.chunks(chunk).collect();
            let mut mine = vec![0f32; chunk];
            sum_in_rank_order(&parts, &mut mine);
            self.world.all_gather_into(&mine[..], &mut send[..]);
            win.copy_from_slice(&send[..win.len()]);
        }
        Ok(())
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let too_big = || Error::Unsupported("more than 2 GiB to gather across ranks".into());
        let len = i32::try_from(mine.len()).map_err(|_| too_big())?;
        let n = self.size();
        let mut counts = vec![0i32; n];
        self.world.all_gather_into(&len, &mut counts[..]);
        let mut displs = vec![0i32; n];
        let mut total = 0usize;
        for r in 0..n {
            displs[r] = i32::try_from(total).map_err(|_| too_big())?;
            total += counts[r] as usize;
        }
        // Never an empty buffer: its dangling pointer (0x1) reads as MPI_IN_PLACE in OpenMPI.
        let send = real(mine);
        let mut buf = vec![0u8; total.max(1)];
        {
            let mut part = PartitionMut::new(&mut buf[..total], &counts[..], &displs[..]);
            self.world
                .all_gather_varcount_into(&send[..mine.len()], &mut part);
        }
        Ok((0..n)
            .map(|r| {
                let at = displs[r] as usize;
                buf[at..at + counts[r] as usize].to_vec()
            })
            .collect())
    }

    fn all_to_all_bytes(&self, to: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let too_big = || Error::Unsupported("more than 2 GiB to exchange between ranks".into());
        let n = self.size();
        assert_eq!(to.len(), n, "one buffer per rank");
        let counts: Vec<i32> = to
            .iter()
            .map(|b| i32::try_from(b.len()).map_err(|_| too_big()))
            .collect::<Result<_>>()?;
        let mut from = vec![0i32; n];
        self.world.all_to_all_into(&counts[..], &mut from[..]);
        let displs = |c: &[i32]| -> Result<Vec<i32>> {
            let mut at = 0usize;
            c.iter()
                .map(|&x| {
                    let d = i32::try_from(at).map_err(|_| too_big());
                    at += x as usize;
                    d
                })
                .collect()
        };
        let (sd, rd) = (displs(&counts)?, displs(&from)?);
        let send = real(&to.concat());
        let sent: usize = counts.iter().map(|&c| c as usize).sum();
        let total: usize = from.iter().map(|&c| c as usize).sum();
        let mut recv = vec![0u8; total.max(1)];
        {
            let sp = Partition::new(&send[..sent], &counts[..], &sd[..]);
            let mut rp = PartitionMut::new(&mut recv[..total], &from[..], &rd[..]);
            self.world.all_to_all_varcount_into(&sp, &mut rp);
        }
        Ok((0..n)
            .map(|r| recv[rd[r] as usize..rd[r] as usize + from[r] as usize].to_vec())
            .collect())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
