//! Rotary position tables: one per distinct (theta, scaling) the blocks use,
//! computed as transformers computes them.

use candle_core::{Device, Tensor};

use crate::checkpoint::config::{ModelConfig, RopeScaling};
use crate::error::Result;

/// A rope table keyed by (theta, scaling); Gemma 3 uses two.
pub(crate) struct RopeSpec {
    theta: f64,
    scaling: RopeScaling,
}

/// The distinct rope tables the first `n` blocks use, and each block's index into them.
pub(crate) fn rope_specs(cfg: &ModelConfig, n: usize) -> (Vec<RopeSpec>, Vec<usize>) {
    let mut ropes: Vec<RopeSpec> = Vec::new();
    let mut index = Vec::with_capacity(n);
    for l in 0..n {
        let theta = cfg.rope_theta_for(l);
        let scaling = cfg.rope_scaling_for(l).clone();
        let i = match ropes
            .iter()
            .position(|r| r.theta == theta && r.scaling == scaling)
        {
            Some(i) => i,
            None => {
                ropes.push(RopeSpec { theta, scaling });
                ropes.len() - 1
            }
        };
        index.push(i);
    }
    (ropes, index)
}

pub(crate) fn rope_tables(
    cfg: &ModelConfig,
    ropes: &[RopeSpec],
    t: usize,
) -> Result<Vec<(Tensor, Tensor)>> {
    let half = cfg.head_dim / 2;
    let mut out = Vec::with_capacity(ropes.len());
    for spec in ropes {
        let mut inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / spec.theta.powf((2 * i) as f64 / cfg.head_dim as f64))
            .collect();
        match spec.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            } => {
                let low_wl = orig / low_freq_factor;
                let high_wl = orig / high_freq_factor;
                for f in inv.iter_mut() {
                    let wl = 2.0 * std::f64::consts::PI / *f;
                    if wl > low_wl {
                        *f /= factor;
                    } else if wl >= high_wl {
                        let s =
                            (orig / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - s) * *f / factor + s * *f;
                    }
                }
            }
        }
        // transformers computes these in f32; so do we, to match it closely.
        let inv32: Vec<f32> = inv.iter().map(|&x| x as f32).collect();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for pos in 0..t {
            for &f in &inv32 {
                let a = pos as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        out.push((
            Tensor::from_vec(cos, (t, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, half), &Device::Cpu)?,
        ));
    }
    Ok(out)
}
