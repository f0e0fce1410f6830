//! Fused CPU kernels for the forward pass's elementwise work.
//!
//! candle 0.11 runs unary and binary maps on one thread through libm's scalar
//! `tanhf`/`expf`. In the MLP that is three passes over [tokens, intermediate]
//! (activation, copy of the strided half, multiply) on one core, which on
//! Gemma 3 cost as much as a third of the GEMM time. `act_mul` does
//! activation(gate) · up in one pass, split over rayon's threads, with an exp
//! the compiler vectorizes. Written by hand because no crate offers a fused,
//! vectorized activation-times-gate over candle's CPU storage.

use candle_core::{Device, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::checkpoint::config::Activation;
use crate::error::Result;

/// `act(gate) * up` for two [n, k] tensors whose rows are contiguous (a fused
/// projection's halves, or two separate outputs). Falls back to candle's ops
/// for any other layout or device.
pub(crate) fn act_mul(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
    if let Some(out) = act_mul_rows(gate, up, act)? {
        return Ok(out);
    }
    let g = match act {
        Activation::Silu => candle_nn::ops::silu(gate)?,
        Activation::GeluTanh => gate.gelu()?,
    };
    Ok((g * up)?)
}

/// A 2-D f32 CPU tensor with unit column stride: (offset, row stride).
fn row_view(layout: &Layout) -> Option<(usize, usize)> {
    match (layout.dims(), layout.stride()) {
        ([_, _], [rs, 1]) => Some((layout.start_offset(), *rs)),
        _ => None,
    }
}

fn act_mul_rows(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Option<Tensor>> {
    let (n, k) = match gate.dims() {
        [n, k] => (*n, *k),
        _ => return Ok(None),
    };
    if up.dims() != [n, k] || n == 0 || k == 0 {
        return Ok(None);
    }
    let (gs, gl) = gate.storage_and_layout();
    let (us, ul) = up.storage_and_layout();
    let (Storage::Cpu(gc), Storage::Cpu(uc)) = (&*gs, &*us) else {
        return Ok(None);
    };
    let (Ok(g), Ok(u)) = (gc.as_slice::<f32>(), uc.as_slice::<f32>()) else {
        return Ok(None);
    };
    let (Some((go, grs)), Some((uo, urs))) = (row_view(gl), row_view(ul)) else {
        return Ok(None);
    };
    if go + (n - 1) * grs + k > g.len() || uo + (n - 1) * urs + k > u.len() {
        return Ok(None);
    }
    let mut out = vec![0f32; n * k];
    // Chunks of whole rows, a few per thread, so small batches still split.
    let rows_per_task = (n / (4 * rayon::current_num_threads()).max(1)).max(1);
    out.par_chunks_mut(rows_per_task * k)
        .enumerate()
        .for_each(|(c, dst)| {
            for (i, d) in dst.chunks_exact_mut(k).enumerate() {
                let r = c * rows_per_task + i;
                let gr = &g[go + r * grs..go + r * grs + k];
                let ur = &u[uo + r * urs..uo + r * urs + k];
                simd(
                    #[inline(always)]
                    || apply(gr, ur, d, act),
                );
            }
        });
    drop((gs, us));
    Ok(Some(Tensor::from_vec(out, (n, k), &Device::Cpu)?))
}

/// Softmax over attention scores [.., k·t, t] (row r is query position r mod
/// t: grouped heads stack their query rows)
/// with the causal mask, an optional sliding window and the score scale
/// applied in the same pass. candle would take three passes (scale, mask
/// add, softmax), two of them over the full t×t including the masked half;
/// at 512-token prompts that was the larger part of a block. Masked entries
/// are written as exact zeros, as softmax of −∞ gives.
pub(crate) fn causal_softmax(scores: &Tensor, scale: f64, window: Option<usize>) -> Result<Tensor> {
    let dims = scores.dims().to_vec();
    let t = match dims.as_slice() {
        [.., a, b] if *b > 0 && a % b == 0 => *b,
        _ => {
            return Err(crate::error::Error::Usage(format!(
                "attention scores must end in [k·t, t], found {dims:?}"
            )))
        }
    };
    let scores = scores.contiguous()?;
    let (st, layout) = scores.storage_and_layout();
    let Storage::Cpu(cpu) = &*st else {
        drop(st);
        return causal_softmax_candle(&scores, scale, window, &dims);
    };
    let src =
        &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + scores.elem_count()];
    let mut out = vec![0f32; src.len()];
    let scale = scale as f32;
    out.par_chunks_mut(t * 64)
        .zip(src.par_chunks(t * 64))
        .enumerate()
        .for_each(|(c, (dst, srcs))| {
            for (k, (d, s)) in dst
                .chunks_exact_mut(t)
                .zip(srcs.chunks_exact(t))
                .enumerate()
            {
                let i = (c * 64 + k) % t;
                let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
                simd(
                    #[inline(always)]
                    || softmax_row(&s[lo..=i], &mut d[lo..=i], scale),
                );
            }
        });
    drop(st);
    Ok(Tensor::from_vec(out, dims, &Device::Cpu)?)
}

/// Reductions run over 16 lanes so the compiler may vectorize them (strict
/// float order would otherwise force one running total).
#[inline(always)]
fn softmax_row(s: &[f32], d: &mut [f32], scale: f32) {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = s.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let m = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
        * scale;
    for (o, &x) in d.iter_mut().zip(s) {
        *o = exp(x * scale - m);
    }
    let mut sums = [0f32; L];
    let dchunks = d.chunks_exact(L);
    let dtail: f32 = dchunks.remainder().iter().sum();
    for c in dchunks {
        for (a, &x) in sums.iter_mut().zip(c) {
            *a += x;
        }
    }
    let inv = 1.0 / (sums.iter().sum::<f32>() + dtail);
    for o in d.iter_mut() {
        *o *= inv;
    }
}

/// The same through candle's ops, for a device without CPU storage.
fn causal_softmax_candle(
    scores: &Tensor,
    scale: f64,
    window: Option<usize>,
    dims: &[usize],
) -> Result<Tensor> {
    let t = dims[dims.len() - 1];
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            if j > i || window.is_some_and(|w| i - j >= w) {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(m, (t, t), scores.device())?;
    // Rows stack k query blocks of t; the mask repeats per block.
    let rows = dims[dims.len() - 2];
    let mut split = dims[..dims.len() - 2].to_vec();
    split.extend([rows / t, t, t]);
    let s = (scores * scale)?.reshape(split)?.broadcast_add(&mask)?;
    Ok(candle_nn::ops::softmax_last_dim(&s)?.reshape(dims)?)
}

/// Runs `f` compiled for the widest vector unit this CPU has. The kernels
/// it calls are `#[inline(always)]`, so they are inlined into, and
/// vectorized for, the feature-enabled wrapper that calls `f`; the binary
/// itself targets baseline x86-64.
#[inline(always)]
fn simd(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(f: impl FnOnce()) {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(f: impl FnOnce()) {
            f()
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU was just checked for the enabled feature.
            return unsafe { avx512(f) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[inline(always)]
fn apply(g: &[f32], u: &[f32], out: &mut [f32], act: Activation) {
    match act {
        Activation::Silu => {
            for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
                *o = silu(x) * y;
            }
        }
        Activation::GeluTanh => {
            for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
                *o = gelu_tanh(x) * y;
            }
        }
    }
}

/// x·σ(x)
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The tanh approximation of GELU (transformers' `gelu_pytorch_tanh`), using
/// 0.5·(1 + tanh z) = σ(2z) so it needs one exp and no tanh.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    let z = C * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * z))
}

/// expf after Cephes: reduce by ln 2, a degree-6 polynomial, scale by 2^n
/// through the exponent bits. Branch-free so loops over it vectorize; within
/// 2 ulp of libm over the clamped range, and saturates rather than overflows.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without
    // a rounding instruction SSE2 lacks.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    y * scale
}

/// Transposes f32 matrices `parts[i]`: [out_i, in] into one [in, Σ out_i]
/// matrix (part i in columns off_i..off_i+out_i): the layout a fused
/// projection's GEMM reads. One pass, tiled, split over rayon's threads.
/// candle's `t().contiguous()` copies one strided element at a time on one
/// thread and `cat` copies again; on a 7B-shaped block that was most of the
/// time spent loading it (BENCHMARKS.md, "Models bigger than memory").
pub(crate) fn transpose_cat(parts: &[Tensor]) -> Result<Tensor> {
    const TILE: usize = 16;
    let inp = match parts.first().map(Tensor::dims) {
        Some([_, i]) => *i,
        _ => {
            return Err(crate::error::Error::Usage(
                "transpose_cat: no 2-D part".into(),
            ))
        }
    };
    let mut owned = Vec::with_capacity(parts.len());
    let mut outs = Vec::with_capacity(parts.len());
    for p in parts {
        let [o, i] = p.dims() else {
            return Err(crate::error::Error::Usage(
                "transpose_cat: a part is not 2-D".into(),
            ));
        };
        if *i != inp {
            return Err(crate::error::Error::Usage(format!(
                "transpose_cat: parts disagree on their input width ({i} vs {inp})"
            )));
        }
        outs.push(*o);
        // No copy when the part is already contiguous f32, as loaded weights are.
        owned.push(p.to_dtype(candle_core::DType::F32)?.contiguous()?);
    }
    let guards: Vec<_> = owned.iter().map(Tensor::storage_and_layout).collect();
    let mut rows: Vec<&[f32]> = Vec::with_capacity(parts.len());
    for ((g, layout), &o) in guards.iter().zip(&outs) {
        let Storage::Cpu(c) = &**g else {
            return Err(crate::error::Error::Usage(
                "transpose_cat: not a CPU tensor".into(),
            ));
        };
        let start = layout.start_offset();
        rows.push(&c.as_slice::<f32>()?[start..start + o * inp]);
    }
    let total: usize = outs.iter().sum();
    let mut out = vec![0f32; inp * total];
    if inp > 0 && total > 0 {
        out.par_chunks_mut(TILE * total)
            .enumerate()
            .for_each(|(tile, dst)| {
                let r0 = tile * TILE;
                let nr = dst.len() / total;
                let mut off = 0;
                for (src, &o) in rows.iter().zip(&outs) {
                    for c in 0..o {
                        let s = &src[c * inp + r0..c * inp + r0 + nr];
                        for (r, &v) in s.iter().enumerate() {
                            dst[r * total + off + c] = v;
                        }
                    }
                    off += o;
                }
            });
    }
    Ok(Tensor::from_vec(out, (inp, total), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_tracks_libm_within_two_ulp() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.0137;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations_match_their_definitions() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let xd = x as f64;
            let silu_ref = xd / (1.0 + (-xd).exp());
            let z = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            let gelu_ref = 0.5 * xd * (1.0 + z.tanh());
            for (got, want) in [(silu(x), silu_ref), (gelu_tanh(x), gelu_ref)] {
                let err = (got as f64 - want).abs();
                assert!(err <= 1e-6 * want.abs().max(1e-3), "x={x}: {got} vs {want}");
            }
            x += 0.01;
        }
    }

    #[test]
    fn causal_softmax_matches_masked_candle_softmax() -> Result<()> {
        let dev = Device::Cpu;
        // Two batch rows, one key/value group of 3 stacked query heads.
        let (b, h, t) = (2, 3, 37);
        let data: Vec<f32> = (0..b * h * t * t)
            .map(|i| ((i * 7919 % 2000) as f32 / 100.0) - 10.0)
            .collect();
        let s = Tensor::from_vec(data, (b, 1, h * t, t), &dev)?;
        for window in [None, Some(5), Some(t + 3)] {
            let got = causal_softmax(&s, 0.125, window)?;
            let want = causal_softmax_candle(&s, 0.125, window, s.dims())?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "window {window:?}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn act_mul_matches_candle_on_a_fused_projection() -> Result<()> {
        let dev = Device::Cpu;
        let (n, k) = (37, 96);
        let data: Vec<f32> = (0..n * 2 * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        let fused = Tensor::from_vec(data, (n, 2 * k), &dev)?;
        let (gate, up) = (fused.narrow(1, 0, k)?, fused.narrow(1, k, k)?);
        for act in [Activation::Silu, Activation::GeluTanh] {
            let got = act_mul(&gate, &up, act)?;
            let g = match act {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let want = (g * &up)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{act:?}: max diff {diff}");
        }
        // A non-row layout (a transpose) goes through candle's path.
        let t = Tensor::from_vec((0..12).map(|i| i as f32).collect(), (3, 4), &dev)?.t()?;
        let got = act_mul(&t, &t, Activation::Silu)?;
        let want = (candle_nn::ops::silu(&t)? * &t)?;
        assert_eq!(got.to_vec2::<f32>()?, want.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn transpose_cat_is_candles_transpose_then_cat() {
        // Odd sizes so the 16-row tiles end part-way; three parts of
        // different widths, as q/k/v are.
        let inp = 37;
        let parts: Vec<Tensor> = [5usize, 3, 21]
            .iter()
            .enumerate()
            .map(|(k, &o)| {
                let v: Vec<f32> = (0..o * inp).map(|i| (i * 7 + k * 1000) as f32).collect();
                Tensor::from_vec(v, (o, inp), &Device::Cpu).unwrap()
            })
            .collect();
        let want =
            Tensor::cat(&parts.iter().map(|p| p.t().unwrap()).collect::<Vec<_>>(), 1).unwrap();
        let got = transpose_cat(&parts).unwrap();
        assert_eq!(got.dims(), [inp, 29]);
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
        // A strided (non-contiguous) part is made contiguous first.
        let wide = Tensor::cat(&[&parts[2], &parts[2]], 1).unwrap();
        let strided = wide.narrow(1, inp, inp).unwrap();
        assert!(!strided.is_contiguous());
        let got = transpose_cat(&[strided]).unwrap();
        let want = parts[2].t().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), want);
        assert!(transpose_cat(&[parts[0].clone(), parts[0].t().unwrap()]).is_err());
    }
}
