//! # sslf
//!
//! Second-order (SLF) and sharpness-aware second-order (SSLF) training of latent-factor models on
//! high-dimensional and incomplete (HDI) data: sparse user × item matrices with many missing
//! entries. Training runs on any GPU that wgpu reaches (Vulkan, Metal, DX12) or on all CPU cores,
//! with one code path for the numerics.
//!
//! The layers, in reading order:
//! - [`error`] and [`fs`]: typed errors, atomic file writes;
//! - [`data`]: ratings, id maps, readers, splits, the synthetic generator, CSR/CSC;
//! - [`model`]: LF and UDV^T layouts, initialisation, the ridge diagonal, rank reports, model files;
//! - [`backend`]: the [`backend::Backend`] trait and its CPU and GPU implementations;
//! - [`problem`]: data + model + ridge on one backend, as cost, gradient and curvature operator;
//! - [`solver`]: SLF/SSLF (Newton–CG with damping, SAM) and the GD, Adam and SGD baselines;
//! - [`config`] and [`experiment`]: JSON configs, the training loop, observers, summaries;
//! - [`cli`]: the `sslf` command.
//!
//! The maths is in `docs/ALGORITHMS.md`; `ARCHITECTURE.md` maps the modules.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod comm;
pub mod config;
pub mod data;
pub mod error;
pub mod experiment;
pub mod fs;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod model;
pub mod problem;
pub mod solver;

pub use error::{Error, Result};
