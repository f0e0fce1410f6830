use super::*;
use nalgebra::DMatrix;

/// The rule that tells a requantized merge from a quantization, on the
/// tensor types and changes the zoo's candidates show.
#[test]
fn an_update_requantized_to_the_base_types_is_not_a_quantization() {
    let blocks = 3;
    let kinds = [("q_proj", "attn_q"), ("up_proj", "mlp_up")];
    let summary = |ty: &dyn Fn(&str) -> &'static str| -> Vec<TensorSummary> {
        (0..blocks)
            .flat_map(|b| kinds.iter().map(move |(p, _)| (b, *p)))
            .map(|(b, p)| TensorSummary {
                name: format!("model.layers.{b}.x.{p}.weight"),
                stored_name: String::new(),
                dtype: ty(p).into(),
                shape: vec![4, 4],
            })
            .collect()
    };
    let diffs = |changed: &dyn Fn(usize, &str) -> bool| -> Vec<TensorDiff> {
        (0..blocks)
            .flat_map(|b| kinds.iter().map(move |k| (b, *k)))
            .map(|(b, (p, kind))| TensorDiff {
                name: format!("model.layers.{b}.x.{p}.weight"),
                block: Some(b),
                kind: kind.into(),
                shape: vec![4, 4],
                rel_change: if changed(b, p) { 0.01 } else { 0.0 },
                cosine: 1.0,
                top_singular: 0.0,
                stable_rank: 20.0,
            })
            .collect()
    };
    let q41 = summary(&|_| "q4_1");
    // Attention merged and requantized to the base's Q4_1; the MLP untouched.
    let attn = diffs(&|_, p| p == "q_proj");
    let why = requantized_update(&q41, &q41, &attn).unwrap();
    assert!(
        why.contains("attn_q changed; mlp_up bit-identical"),
        "{why}"
    );
    // Only some blocks adapted (PEFT's layers_to_transform): still selective.
    assert!(requantized_update(&q41, &q41, &diffs(&|b, p| p == "q_proj" && b != 1)).is_some());
    // Requantizing to the same k-quant moves every tensor: a quantization.
    assert!(requantized_update(&q41, &q41, &diffs(&|_, _| true)).is_none());
    // Quantizing to another type: the changed tensors changed type.
    let q40 = summary(&|_| "q4_0");
    assert!(requantized_update(&q41, &q40, &diffs(&|_, _| true)).is_none());
    // A mixed-type base quantized to a type some tensors already had:
    // those stay bit-identical, the others changed type.
    let mixed = summary(&|p| if p == "up_proj" { "q8_0" } else { "q4_k" });
    let q8 = summary(&|_| "q8_0");
    assert!(requantized_update(&mixed, &q8, &diffs(&|_, p| p == "q_proj")).is_none());
    // Float storage is left to the low-rank test and storage rounding.
    let f32s = summary(&|_| "f32");
    assert!(requantized_update(&f32s, &f32s, &attn).is_none());
}

/// Row-chunked statistics equal the direct ones, chunk boundaries included
/// (2^22 / 3 columns leaves a partial last chunk on 1.5M rows).
#[test]
fn chunked_stats_match_direct_computation() {
    for (rows, cols) in [(40, 7), (1_500_000, 3)] {
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        // A rank-1 change plus a little noise: σ₁ is well separated.
        let u = Tensor::randn(0f32, 1.0, (rows, 1), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, cols), &Device::Cpu).unwrap();
        let noise = Tensor::randn(0f32, 0.01, (rows, cols), &Device::Cpu).unwrap();
        let c = ((&w + u.matmul(&v).unwrap()).unwrap() + noise).unwrap();
        let s = stats("x.weight", &w, &c, None).unwrap();
        let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let cv = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = DMatrix::from_row_iterator(
            rows,
            cols,
            wv.iter().zip(&cv).map(|(a, b)| (*b - *a) as f64),
        );
        let nw: f64 = wv.iter().map(|x| (*x as f64).powi(2)).sum();
        let rel = (d.norm_squared() / nw).sqrt();
        let sigma = d.clone().svd(false, false).singular_values.max();
        assert!(
            (s.rel_change - rel).abs() < 1e-3 * rel,
            "{} vs {rel}",
            s.rel_change
        );
        assert!(
            (s.top_singular - sigma).abs() < 1e-3 * sigma,
            "{} vs {sigma}",
            s.top_singular
        );
        assert!((s.stable_rank - d.norm_squared() / sigma.powi(2)).abs() < 1e-2);
    }
}
