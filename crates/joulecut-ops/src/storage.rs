//! Borrowing the f32 data behind candle tensors and storages.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Storage, StorageRef, Tensor, bail};

/// The contiguous f32 slice a `(storage, layout)` pair describes.
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{op}: expected an f32 tensor, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expected a contiguous tensor"),
    }
}

/// A read guard on a contiguous f32 CPU tensor.
pub struct F32View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl F32View<'_> {
    /// The tensor's elements, in row-major order.
    pub fn as_slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => unreachable!("checked in view()"),
        }
    }
}

/// Locks `t` (which must be contiguous, f32 and on the CPU) for reading; `op` names the caller
/// in the error otherwise.
pub fn view<'a>(t: &'a Tensor, op: &str) -> Result<F32View<'a>> {
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = match layout.contiguous_offsets() {
        Some(r) => r,
        None => bail!("{op}: expected a contiguous tensor"),
    };
    match &*guard {
        Storage::Cpu(CpuStorage::F32(_)) => Ok(F32View { guard, start, end }),
        Storage::Cpu(s) => bail!("{op}: expected an f32 tensor, got {:?}", s.dtype()),
        _ => bail!("{op}: only CPU tensors are supported"),
    }
}

/// Number of rayon worker threads gemm and our kernels may split work over: 1 when the caller
/// already runs on a rayon worker (e.g. one row chunk of a batch split by the model), where a
/// nested split would only add hand-offs between threads that are busy anyway.
pub fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        return 1;
    }
    rayon::current_num_threads().max(1)
}
