//! Label-free realignment on real SmolLM2 activations: a candidate whose
//! residual stream is rotated, or shifted along the monitor's direction,
//! breaks the monitor; a map fitted on unlabeled prompts repairs it.

use nalgebra::DMatrix;
use probegate::activations::cache::{cached_activations, ActCache, ActSpec};
use probegate::gate::repair::realign::{choose, fit, Method};
use probegate::model::{Pool, Precision};
use probegate::monitor::data::read_labeled;
use probegate::monitor::metrics::{at_threshold, auroc};
use probegate::monitor::Monitor;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::harness::*;

struct Fixture {
    monitor: Monitor,
    test_x: Vec<Vec<f32>>,
    test_y: Vec<u8>,
    corpus_x: Vec<Vec<f32>>,
}

fn fixture_acts() -> Fixture {
    let ck = open("smollm2");
    let monitor = Monitor::load(&repo().join("monitors/smollm2/self_harm-l15")).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ActCache::at(cache_dir.path().to_path_buf(), 1 << 30);
    let spec = ActSpec {
        pool: Pool::Last,
        precision: Precision::F32,
        batch_size: 16,
    };
    let test = read_labeled(&repo().join("data/suite/self_harm/test.jsonl"), None).unwrap();
    let mut corpus =
        probegate::util::read_prompts(&repo().join("data/realign/corpus.jsonl")).unwrap();
    corpus.truncate(400);
    let t = cached_activations(&ck, &cache, &test.texts, &[15], spec, &mut |_| {}).unwrap();
    let c = cached_activations(&ck, &cache, &corpus, &[15], spec, &mut |_| {}).unwrap();
    Fixture {
        monitor,
        test_x: t[&15].to_vec2().unwrap(),
        test_y: test.labels,
        corpus_x: c[&15].to_vec2().unwrap(),
    }
}

fn apply(rows: &[Vec<f32>], f: &dyn Fn(&[f32]) -> Vec<f32>) -> Vec<Vec<f32>> {
    rows.iter().map(|r| f(r)).collect()
}

fn scores(m: &Monitor, rows: &[Vec<f32>]) -> Vec<f64> {
    let d = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    m.scores(
        &candle_core::Tensor::from_vec(flat, (rows.len(), d), &candle_core::Device::Cpu).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_rotated_candidate_is_repaired_without_labels() {
    let fx = fixture_acts();
    let d = fx.test_x[0].len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let g: DMatrix<f64> = DMatrix::from_fn(d, d, |_, _| StandardNormal.sample(&mut rng));
    let q = g.qr().q();
    let rotate = |r: &[f32]| -> Vec<f32> {
        let v: nalgebra::DVector<f64> =
            nalgebra::DVector::from_iterator(d, r.iter().map(|x| *x as f64));
        (&q * v).iter().map(|x| *x as f32).collect()
    };
    let base_auc = auroc(&scores(&fx.monitor, &fx.test_x), &fx.test_y).unwrap();
    let cand_test = apply(&fx.test_x, &rotate);
    let stale_auc = auroc(&scores(&fx.monitor, &cand_test), &fx.test_y).unwrap();
    assert!(
        stale_auc < base_auc - 0.1,
        "rotation should break the monitor: {stale_auc} vs {base_auc}"
    );

    let cand_corpus = apply(&fx.corpus_x, &rotate);
    let fitted = choose(&fx.monitor, &cand_corpus, &fx.corpus_x, 0.25).unwrap();
    let (map, choice) = (&fitted.chosen, &fitted.choice);
    // The shared-statistics fits are the single-method fits, every one.
    assert_eq!(
        fitted.all.len(),
        probegate::gate::repair::realign::METHODS.len()
    );
    for m in &fitted.all {
        let alone =
            probegate::gate::repair::realign::fit(m.method, &cand_corpus, &fx.corpus_x).unwrap();
        let gap = (&m.a - &alone.a).abs().max() + (&m.c - &alone.c).abs().max();
        assert!(gap < 1e-9, "{:?} differs by {gap}", m.method);
    }
    eprintln!(
        "chosen {:?}, held-out errors {:?}",
        choice.method, choice.errors
    );
    // A rotation is in Procrustes's family and ridge's (any linear map);
    // which of the two fits the held-out unlabeled prompts better is a near
    // tie (0.051 and 0.056 on the v2 suite's self_harm-l15), so either may
    // be chosen. A mean shift or CORAL cannot undo a rotation and must lose.
    assert!(
        matches!(choice.method, Method::Procrustes | Method::Ridge),
        "{:?}",
        choice.method
    );
    let err = |m: Method| choice.errors.iter().find(|e| e.0 == m).unwrap().1;
    for weak in [Method::MeanShift, Method::Coral] {
        assert!(err(weak) > 5.0 * err(choice.method), "{:?}", choice.errors);
    }
    let repaired = map.compose(&fx.monitor, "candidate");
    let fixed_auc = auroc(&scores(&repaired, &cand_test), &fx.test_y).unwrap();
    eprintln!("base {base_auc:.3}, stale {stale_auc:.3}, repaired {fixed_auc:.3}");
    // 300 fitting prompts in 576 dimensions pin the rotation down only on the
    // prompts' span, so the repair is close, not exact: the study's criterion
    // (back within 0.05 of base AUROC) is what is asserted.
    assert!(
        (fixed_auc - base_auc).abs() < 0.05 && fixed_auc > stale_auc + 0.3,
        "{fixed_auc} vs {base_auc}"
    );
}

#[test]
fn a_shifted_threshold_is_repaired_by_mean_shift() {
    let fx = fixture_acts();
    // Shift every activation along the probe's direction: ranking (AUROC) is
    // intact but the decision threshold is now wrong.
    let (w, _) = fx.monitor.folded();
    let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    let base_scores = scores(&fx.monitor, &fx.test_x);
    let t = fx.monitor.meta.classifier.threshold;
    let shift = |r: &[f32]| -> Vec<f32> {
        r.iter()
            .zip(&w)
            .map(|(x, w)| x + (12.0 * w / (norm * norm)) as f32)
            .collect()
    };
    let cand_test = apply(&fx.test_x, &shift);
    let stale = scores(&fx.monitor, &cand_test);
    let (ba_base, ba_stale) = (
        at_threshold(&base_scores, &fx.test_y, t).balanced_accuracy,
        at_threshold(&stale, &fx.test_y, t).balanced_accuracy,
    );
    assert!(
        (auroc(&stale, &fx.test_y).unwrap() - auroc(&base_scores, &fx.test_y).unwrap()).abs()
            < 1e-9
    );
    assert!(
        ba_stale < ba_base - 0.1,
        "balanced accuracy {ba_stale} vs {ba_base}"
    );
    let map = fit(
        Method::MeanShift,
        &apply(&fx.corpus_x, &shift),
        &fx.corpus_x,
    )
    .unwrap();
    let fixed = scores(&map.compose(&fx.monitor, "c"), &cand_test);
    let ba_fixed = at_threshold(&fixed, &fx.test_y, t).balanced_accuracy;
    assert!((ba_fixed - ba_base).abs() < 1e-6, "{ba_fixed} vs {ba_base}");
}
