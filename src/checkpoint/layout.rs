//! How checkpoints store tensors against how transformers holds them: the
//! llama q/k row permutation GGUF converters apply and Gemma's baked
//! `1 + w` norms. The loader, the diff and the exporters all read through
//! this, so it sits with the readers.

use candle_core::Tensor;

use super::config::Arch;
use super::WeightLayout;
use crate::error::{Error, Result};

/// Inverse of llama.cpp's `permute(w, n_head)`: rows grouped per head as
/// (half, 2) interleaved pairs go back to (2, half) rotate-half order.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    regroup_head_rows(w, n_head, "unpermute", true)
}

/// Inverse of [`unpermute_qk`] (used by tests and by adapters on GGUF bases).
pub fn permute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    regroup_head_rows(w, n_head, "permute", false)
}

/// Transposes each head's rows as a grid: (half, 2) to (2, half) when
/// `interleaved` (GGUF's pairs back to rotate-half), the reverse otherwise;
/// `verb` names the move in errors.
fn regroup_head_rows(w: &Tensor, n_head: usize, verb: &str, interleaved: bool) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    // A 0-D tensor has no rows to permute: refused before any indexing.
    let out = dims.first().copied().unwrap_or(0);
    if n_head == 0 || out == 0 || out % (2 * n_head) != 0 {
        return Err(Error::Usage(format!(
            "cannot {verb} {out} rows over {n_head} heads"
        )));
    }
    let half = out / n_head / 2;
    let (a, b) = if interleaved { (half, 2) } else { (2, half) };
    let rest: usize = dims[1..].iter().product();
    Ok(w.reshape((n_head, a, b, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The tensor as transformers holds it, given how it is stored.
pub fn to_hf_values(
    name: &str,
    t: Tensor,
    layout: &WeightLayout,
    arch: Arch,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<(Tensor, bool, bool)> {
    let mut permuted = false;
    let mut unbaked = false;
    let mut t = t;
    if layout.rope_interleaved {
        if name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias") {
            t = unpermute_qk(&t, n_heads)?;
            permuted = true;
        } else if name.ends_with("self_attn.k_proj.weight")
            || name.ends_with("self_attn.k_proj.bias")
        {
            t = unpermute_qk(&t, n_kv_heads)?;
            permuted = true;
        }
    }
    if layout.norm_plus_one_baked && arch == Arch::Gemma3 && name.ends_with("norm.weight") {
        t = (t - 1.0)?;
        unbaked = true;
    }
    Ok((t, permuted, unbaked))
}

/// The inverse move for a linear-layer weight (or an adapter's delta to
/// one) in transformers' layout, back to the layout the file stores: GGUF's
/// interleaved q/k rows. Norms are not linear layers and never come here.
pub fn to_stored_layout(
    name: &str,
    t: Tensor,
    layout: &WeightLayout,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Tensor> {
    if !layout.rope_interleaved {
        return Ok(t);
    }
    if name.ends_with("self_attn.q_proj.weight") {
        permute_qk(&t, n_heads)
    } else if name.ends_with("self_attn.k_proj.weight") {
        permute_qk(&t, n_kv_heads)
    } else {
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn permute_and_unpermute_are_inverse_and_match_llama_cpp() {
        // 2 heads of dim 4, 3 input columns; rows numbered so we can see moves.
        let w = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_qk(&w, 2).unwrap();
        // llama.cpp: head rows [0,1,2,3] -> [0,2,1,3] (first half interleaved with second).
        let first_col: Vec<f32> = p
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first_col, vec![0., 6., 3., 9., 12., 18., 15., 21.]);
        let back = unpermute_qk(&p, 2).unwrap();
        let diff = (back - &w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        assert!(unpermute_qk(&w, 3).is_err());
    }

    #[test]
    fn a_scalar_or_zero_heads_is_refused_not_indexed() {
        let scalar = Tensor::new(1f32, &Device::Cpu).unwrap();
        assert!(unpermute_qk(&scalar, 2).is_err());
        assert!(permute_qk(&scalar, 2).is_err());
        let w = Tensor::zeros((8, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(permute_qk(&w, 0).is_err());
    }
}
