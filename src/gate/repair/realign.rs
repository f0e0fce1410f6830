//! Label-free realignment: fit a map from candidate to base activations at a
//! monitor's block on unlabeled prompts (the same prompts through both
//! models), then fold it into the monitor so the repaired probe is still one
//! linear map and costs nothing at serving time.
//!
//! Methods: mean shift, CORAL (whiten with the candidate's covariance,
//! recolour with the base's), affine ridge least squares, and orthogonal
//! Procrustes. The method is chosen label-free, by how well mapped candidate
//! scores reproduce base scores on held-out unlabeled prompts; labels are
//! only used afterwards, to verify.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::policy::TextsUntil;
use crate::gate::repair::context::{
    train_order, Attempt, Context, LadderActs, Verifier, FIRST_PART, PART,
};
use crate::gate::revalidate::EvalResult;
use crate::monitor::Monitor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    MeanShift,
    Coral,
    Ridge,
    Procrustes,
}

pub const METHODS: [Method; 4] = [
    Method::MeanShift,
    Method::Coral,
    Method::Ridge,
    Method::Procrustes,
];

/// x_base ≈ a · x_cand + c, with `a` [d, d] and `c` [d].
#[derive(Debug, Clone)]
pub struct AffineMap {
    pub method: Method,
    pub a: DMatrix<f64>,
    pub c: DVector<f64>,
}

fn to_matrix(rows: &[Vec<f32>]) -> DMatrix<f64> {
    let (n, d) = (rows.len(), rows.first().map(Vec::len).unwrap_or(0));
    DMatrix::from_fn(n, d, |i, j| rows[i][j] as f64)
}

fn mean(x: &DMatrix<f64>) -> DVector<f64> {
    let n = x.nrows().max(1) as f64;
    DVector::from_iterator(x.ncols(), x.column_iter().map(|c| c.sum() / n))
}

fn centered(x: &DMatrix<f64>, m: &DVector<f64>) -> DMatrix<f64> {
    let mut y = x.clone();
    for mut row in y.row_iter_mut() {
        row -= m.transpose();
    }
    y
}

/// Symmetric matrix power (p = ±1/2) with eigenvalues floored at `eps`.
fn sym_pow(s: &DMatrix<f64>, p: f64, eps: f64) -> DMatrix<f64> {
    let e = s.clone().symmetric_eigen();
    let vals = e.eigenvalues.map(|v| v.max(eps).powf(p));
    &e.eigenvectors * DMatrix::from_diagonal(&vals) * e.eigenvectors.transpose()
}

/// What every method needs from paired rows, computed once per row set:
/// means and the three Gram matrices of the centred rows.
struct Paired {
    mc: DVector<f64>,
    mb: DVector<f64>,
    /// ccᵀcc, cbᵀcb, ccᵀcb (candidate c, base b, centred)
    gcc: DMatrix<f64>,
    gbb: DMatrix<f64>,
    gcb: DMatrix<f64>,
    n: f64,
}

fn paired(cand: &[Vec<f32>], base: &[Vec<f32>]) -> Result<Paired> {
    if cand.len() != base.len() || cand.len() < 2 {
        return Err(Error::Usage(
            "realignment needs at least two paired prompts".into(),
        ));
    }
    let (xc, xb) = (to_matrix(cand), to_matrix(base));
    let (mc, mb) = (mean(&xc), mean(&xb));
    let (cc, cb) = (centered(&xc, &mc), centered(&xb, &mb));
    let cct = cc.transpose();
    let ((gcc, gcb), gbb) = rayon::join(
        || rayon::join(|| &cct * &cc, || &cct * &cb),
        || cb.transpose() * &cb,
    );
    Ok(Paired {
        mc,
        mb,
        gcc,
        gbb,
        gcb,
        n: xc.nrows() as f64,
    })
}

fn fit_paired(method: Method, p: &Paired) -> Result<AffineMap> {
    let d = p.mc.len();
    let a = match method {
        Method::MeanShift => DMatrix::identity(d, d),
        Method::Coral => {
            // Regularise covariances by a share of their mean variance: with
            // fewer prompts than dimensions they are singular.
            let sc = &p.gcc / p.n;
            let sb = &p.gbb / p.n;
            let lam_c = sc.trace() / d as f64 * 0.1 + 1e-9;
            let lam_b = sb.trace() / d as f64 * 0.1 + 1e-9;
            let sc = sc + DMatrix::identity(d, d) * lam_c;
            let sb = sb + DMatrix::identity(d, d) * lam_b;
            // Row-vector convention: x_b = x_c · Sc^-1/2 · Sb^1/2, so a = (Sc^-1/2 Sb^1/2)ᵀ.
            let (wc, rb) = rayon::join(|| sym_pow(&sc, -0.5, 1e-12), || sym_pow(&sb, 0.5, 0.0));
            (wc * rb).transpose()
        }
        Method::Ridge => {
            let g = &p.gcc;
            let lam = g.trace() / d as f64 * 0.1 + 1e-9;
            let g = g + DMatrix::identity(d, d) * lam;
            let chol = g
                .cholesky()
                .ok_or_else(|| Error::Usage("ridge system is not positive definite".into()))?;
            chol.solve(&p.gcb).transpose()
        }
        Method::Procrustes => {
            let svd = p.gcb.clone().svd(true, true);
            let (u, vt) = match (svd.u, svd.v_t) {
                (Some(u), Some(vt)) => (u, vt),
                _ => return Err(Error::Usage("Procrustes SVD did not converge".into())),
            };
            // x_b = x_c · R with R = U Vᵀ; a = Rᵀ.
            (u * vt).transpose()
        }
    };
    let c = &p.mb - &a * &p.mc;
    Ok(AffineMap { method, a, c })
}

/// Fits `method` on paired rows (same prompts through candidate and base).
pub fn fit(method: Method, cand: &[Vec<f32>], base: &[Vec<f32>]) -> Result<AffineMap> {
    fit_paired(method, &paired(cand, base)?)
}

/// Every method in [`METHODS`] order, sharing one pass over the rows and
/// fitted in parallel.
pub fn fit_all(cand: &[Vec<f32>], base: &[Vec<f32>]) -> Result<Vec<AffineMap>> {
    use rayon::prelude::*;
    let p = paired(cand, base)?;
    METHODS.par_iter().map(|&m| fit_paired(m, &p)).collect()
}

impl AffineMap {
    /// The monitor, folded onto candidate activations: w' = aᵀw, b' = b + w·c.
    pub fn compose(&self, m: &Monitor, candidate_fingerprint: &str) -> Monitor {
        let (w, b) = m.folded();
        let w = DVector::from_vec(w);
        let w2 = self.a.transpose() * &w;
        let b2 = b + w.dot(&self.c);
        let mut out = m.clone();
        out.w = w2.iter().map(|v| *v as f32).collect();
        out.mean = vec![0.0; out.w.len()];
        out.std = vec![1.0; out.w.len()];
        out.meta.classifier.bias = b2;
        out.meta.name = format!("{}-realigned", m.meta.name);
        out.meta.provenance.repaired_for = Some(candidate_fingerprint.to_string());
        out.meta.description = format!("{} (realigned by {:?})", m.meta.description, self.method);
        out.dir = None;
        out
    }
}

fn logits(m: &Monitor, rows: &[Vec<f32>]) -> Vec<f64> {
    let (w, b) = m.folded();
    rows.iter()
        .map(|r| r.iter().zip(&w).map(|(x, w)| *x as f64 * w).sum::<f64>() + b)
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub method: Method,
    /// Mean squared difference between repaired candidate logits and base logits
    /// on held-out unlabeled prompts, in units of base-logit variance.
    pub heldout_error: f64,
    pub errors: Vec<(Method, f64)>,
    /// The same error for the monitor left as it is: a map that does not beat
    /// it is not applied (maps fitted on too few or off-distribution prompts
    /// can wreck a monitor).
    pub identity_error: f64,
}

impl Choice {
    pub fn beats_identity(&self) -> bool {
        self.heldout_error < self.identity_error
    }
}

/// A label-free choice and every method's map fitted on all the prompts
/// (the chosen one among them), for reporting the alternatives.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub chosen: AffineMap,
    pub choice: Choice,
    pub all: Vec<AffineMap>,
}

/// Every method fitted on the `fit` rows and scored on the `held` rows:
/// how well its repaired candidate logits reproduce the base's there.
pub fn judge(
    m: &Monitor,
    fit: (&[Vec<f32>], &[Vec<f32>]),
    held: (&[Vec<f32>], &[Vec<f32>]),
) -> Result<Choice> {
    let ((fit_c, fit_b), (held_c, held_b)) = (fit, held);
    if held_c.len() < 2 || held_c.len() != held_b.len() {
        return Err(Error::Usage(format!(
            "{} held-out unlabeled prompts are too few to choose a map",
            held_c.len()
        )));
    }
    let zb = logits(m, held_b);
    let mb = zb.iter().sum::<f64>() / zb.len() as f64;
    let var = (zb.iter().map(|z| (z - mb).powi(2)).sum::<f64>() / zb.len() as f64).max(1e-12);
    let mse = |zc: &[f64]| {
        zc.iter()
            .zip(&zb)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / zb.len() as f64
            / var
    };
    let identity_error = mse(&logits(m, held_c));
    let mut best: Option<(f64, Method)> = None;
    let mut errors = Vec::new();
    for map in fit_all(fit_c, fit_b)? {
        let repaired = map.compose(m, "");
        let err = mse(&logits(&repaired, held_c));
        errors.push((map.method, err));
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, map.method));
        }
    }
    let (heldout_error, method) =
        best.ok_or_else(|| Error::Usage("no realignment method fitted".into()))?;
    Ok(Choice {
        method,
        heldout_error,
        errors,
        identity_error,
    })
}

/// Every method refitted on all the rows, the chosen one picked out.
fn refit(choice: Choice, cand: &[Vec<f32>], base: &[Vec<f32>]) -> Result<Fitted> {
    let all = fit_all(cand, base)?;
    let chosen = all
        .iter()
        .find(|a| a.method == choice.method)
        .cloned()
        .ok_or_else(|| Error::Usage("the chosen realignment method was not refitted".into()))?;
    Ok(Fitted {
        chosen,
        choice,
        all,
    })
}

/// Fits every method on the first part of the paired prompts and picks the
/// one whose repaired scores best reproduce the base's on the rest; then
/// refits every method on all the prompts.
pub fn choose(m: &Monitor, cand: &[Vec<f32>], base: &[Vec<f32>], holdout: f64) -> Result<Fitted> {
    let n = cand.len();
    let k = ((n as f64) * (1.0 - holdout)).round() as usize;
    if k < 2 || n - k < 2 {
        return Err(Error::Usage(format!(
            "{n} unlabeled prompts are too few to fit and hold out"
        )));
    }
    let choice = judge(m, (&cand[..k], &base[..k]), (&cand[k..], &base[k..]))?;
    refit(choice, cand, base)
}

/// Held-out texts of the concept's own, judged on at every step: a quarter
/// of the split, at most the ladder's first part.
fn heldout_size(split: usize) -> usize {
    (split / 4).min(FIRST_PART)
}

/// The selection error counts as stable when a step moves it by at most
/// this share of its value (or [`STABLE_FLOOR`], in base-logit variance
/// units, when it is tiny): adding texts no longer changes which map wins
/// or by how much, so more forward passes would buy nothing.
pub const STABLE_SHARE: f64 = 0.10;
pub const STABLE_FLOOR: f64 = 0.01;

/// One step of the growing fit: texts of the concept's own used so far,
/// the method the held-out texts chose and its error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub concept_texts: usize,
    pub method: Method,
    pub heldout_error: f64,
}

/// The rule that stops the growth: the last two steps' errors agree.
pub fn stable(steps: &[Step]) -> bool {
    match steps {
        [.., a, b] => {
            (b.heldout_error - a.heldout_error).abs()
                <= (STABLE_SHARE * a.heldout_error).max(STABLE_FLOOR)
        }
        _ => false,
    }
}

/// The corpus plus the concept's own unlabeled texts, from [`PART`] beyond
/// the held-out ones and doubling, until the held-out error is [`stable`]
/// or the split is used up. The held-out texts are the first of the ladder's order; the
/// final map is refitted on everything seen, held-out texts included.
fn grow<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    corpus: (&[Vec<f32>], &[Vec<f32>]),
) -> Result<(Fitted, Vec<Step>, usize)> {
    let train = cx.train(m)?;
    let len = train.texts.len();
    if cx.policy.realignment.concept_texts_until == TextsUntil::All {
        // Every text after the corpus, in the split's own order, the last
        // quarter of all rows held out: the choice the ladder has always made.
        let order = train_order(len);
        let in_split_order = |rows: Vec<Vec<f32>>| {
            let mut out = vec![Vec::new(); len];
            for (p, r) in rows.into_iter().enumerate() {
                out[order[p]] = r;
            }
            out
        };
        let c = in_split_order(
            acts.prefix(&cx.models.cand, false, train, len, m)?
                .to_vec2::<f32>()?,
        );
        let b = in_split_order(
            acts.prefix(&cx.models.base, true, train, len, m)?
                .to_vec2::<f32>()?,
        );
        let all_c: Vec<Vec<f32>> = corpus.0.iter().cloned().chain(c).collect();
        let all_b: Vec<Vec<f32>> = corpus.1.iter().cloned().chain(b).collect();
        let f = choose(m, &all_c, &all_b, 0.25)?;
        let step = Step {
            concept_texts: len,
            method: f.choice.method,
            heldout_error: f.choice.heldout_error,
        };
        return Ok((f, vec![step], len));
    }
    let held = heldout_size(len);
    if held < 2 || len - held < 2 {
        // Too few of its own texts to judge on: the corpus alone, as without them.
        let f = choose(m, corpus.0, corpus.1, 0.25)?;
        return Ok((f, Vec::new(), 0));
    }
    let mut n = (held + PART).min(len);
    let mut steps = Vec::new();
    loop {
        let c = acts
            .prefix(&cx.models.cand, false, train, n, m)?
            .to_vec2::<f32>()?;
        let b = acts
            .prefix(&cx.models.base, true, train, n, m)?
            .to_vec2::<f32>()?;
        let fit_c: Vec<Vec<f32>> = corpus.0.iter().chain(&c[held..]).cloned().collect();
        let fit_b: Vec<Vec<f32>> = corpus.1.iter().chain(&b[held..]).cloned().collect();
        let choice = judge(m, (&fit_c, &fit_b), (&c[..held], &b[..held]))?;
        steps.push(Step {
            concept_texts: n,
            method: choice.method,
            heldout_error: choice.heldout_error,
        });
        if stable(&steps) || n == len {
            let all_c: Vec<Vec<f32>> = corpus.0.iter().chain(&c).cloned().collect();
            let all_b: Vec<Vec<f32>> = corpus.1.iter().chain(&b).cloned().collect();
            return Ok((refit(choice, &all_c, &all_b)?, steps, n));
        }
        // Doubling the texts beyond the held-out ones bounds the judging
        // (every method refitted) to a few steps whatever the split's size.
        n = (held + 2 * (n - held)).min(len);
    }
}

/// What the realignment rung did for one monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealignReport {
    pub method: Method,
    /// Label-free selection error (held-out unlabeled prompts, base-logit variance units).
    pub heldout_error: f64,
    /// The same error with no map: a map must beat it to be applied.
    pub identity_error: f64,
    pub prompts: usize,
    /// Of `prompts`, the concept's own unlabeled training texts.
    #[serde(default)]
    pub concept_texts: usize,
    /// The label-free choice at each step of the concept's texts (one step
    /// unless `concept_texts_until = "stable"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Labeled metrics of the repaired monitor through the candidate.
    pub after: EvalResult,
    pub stale_reasons_after: Vec<String>,
    /// Whether the chosen map beat leaving the monitor alone on held-out
    /// unlabeled prompts, and so was applied (`after` is measured either way).
    #[serde(default = "applied_default")]
    pub applied: bool,
    pub verified: bool,
    /// Where the repaired monitor was written (relative to the output directory).
    pub written_to: Option<String>,
    /// Every method's labeled result, for auditing the label-free choice
    /// (never used to choose: that would spend the labels the choice must not see).
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
}

/// Reports written before `applied` existed only hold applied maps' figures
/// without a note; the note's absence is what `applied` now says.
fn applied_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alternative {
    pub method: Method,
    pub heldout_error: f64,
    pub auroc: f64,
    pub balanced_accuracy: f64,
    pub would_pass: bool,
}

/// Rung 1, label-free: fit every map on the paired corpus (and, when the
/// policy says so, as many of the concept's unlabeled training texts as the
/// choice needs to settle: [`grow`]), choose one on
/// held-out unlabeled prompts, and verify it on the labeled test data.
/// `fixed` is the realigned monitor whenever the map beat leaving it alone,
/// even when it does not repair: later rungs may start from it.
pub fn rung<'a>(
    cx: &Context<'a>,
    acts: &mut LadderActs<'a>,
    m: &Monitor,
    verifier: &Verifier,
) -> Result<Attempt<RealignReport>> {
    let policy = cx.policy;
    let paired = cx.corpus_acts.get()?.at(m)?;
    let (fitted, steps, concept_texts) = if policy.realignment.concept_texts {
        grow(cx, acts, m, (&paired.cand, &paired.base))?
    } else {
        (choose(m, &paired.cand, &paired.base, 0.25)?, Vec::new(), 0)
    };
    let choice = &fitted.choice;
    let fixed = fitted.chosen.compose(m, &cx.models.cand_fp);
    let (after, mut reasons_after) = verifier.verify(&fixed)?;
    if !choice.beats_identity() {
        reasons_after.insert(
            0,
            format!(
                "no map beat leaving the monitor as it is on held-out unlabeled prompts ({:.3} vs {:.3}): not applied",
                choice.heldout_error, choice.identity_error
            ),
        );
    }
    let mut alternatives = Vec::new();
    for (method, err) in &choice.errors {
        let Some(map) = fitted.all.iter().find(|a| a.method == *method) else {
            continue;
        };
        let (ae, ar) = verifier.verify(&map.compose(m, &cx.models.cand_fp))?;
        alternatives.push(Alternative {
            method: *method,
            heldout_error: *err,
            auroc: ae.auroc,
            balanced_accuracy: ae.balanced_accuracy,
            would_pass: ar.is_empty(),
        });
    }
    let repaired =
        choice.beats_identity() && (reasons_after.is_empty() || !policy.realignment.verify);
    Ok(Attempt {
        report: RealignReport {
            method: choice.method,
            heldout_error: choice.heldout_error,
            identity_error: choice.identity_error,
            prompts: paired.cand.len() + concept_texts,
            concept_texts,
            steps,
            after,
            stale_reasons_after: reasons_after,
            applied: choice.beats_identity(),
            verified: policy.realignment.verify,
            written_to: None,
            alternatives,
        },
        fixed: choice.beats_identity().then_some(fixed),
        repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: usize, e: f64) -> Step {
        Step {
            concept_texts: n,
            method: Method::Ridge,
            heldout_error: e,
        }
    }

    #[test]
    fn growth_stops_only_when_a_step_moves_the_error_little() {
        // One step alone is never stable: there is nothing to compare.
        assert!(!stable(&[step(160, 0.3)]));
        // 0.307 → 0.276 is 10.1% of 0.307: still falling.
        assert!(!stable(&[step(134, 0.307), step(198, 0.276)]));
        assert!(stable(&[step(160, 0.20), step(224, 0.185)]));
        // Worse by little is stable too (held-out noise, not a trend).
        assert!(stable(&[step(160, 0.20), step(224, 0.21)]));
        // Tiny errors: the absolute floor decides.
        assert!(stable(&[step(224, 0.044), step(352, 0.041)]));
        assert!(!stable(&[step(224, 0.060), step(352, 0.045)]));
        // Only the last two steps count.
        assert!(stable(&[step(96, 0.9), step(160, 0.2), step(224, 0.19)]));
    }

    #[test]
    fn the_held_out_texts_are_a_quarter_of_the_split_at_most_the_first_part() {
        assert_eq!(heldout_size(420), FIRST_PART);
        assert_eq!(heldout_size(280), 70);
        assert_eq!(heldout_size(7), 1);
    }

    /// judge() scores every method on rows it did not fit, and choose()
    /// refits the winner on everything: on rows where the candidate is the
    /// base shifted by a constant, mean shift (or any affine method)
    /// reproduces the base's logits almost exactly and beats leaving the
    /// monitor alone.
    #[test]
    fn a_shift_is_found_label_free() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let m = crate::monitor::shipped("self_harm-l22");
        let d = m.w.len();
        let base: Vec<Vec<f32>> = (0..80)
            .map(|_| (0..d).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let cand: Vec<Vec<f32>> = base
            .iter()
            .map(|r| r.iter().map(|x| x + 0.7).collect())
            .collect();
        let c = judge(&m, (&cand[..60], &base[..60]), (&cand[60..], &base[60..])).unwrap();
        assert!(c.beats_identity(), "{c:?}");
        assert!(c.heldout_error < 1e-6, "{c:?}");
        let f = choose(&m, &cand, &base, 0.25).unwrap();
        assert_eq!(f.all.len(), METHODS.len());
        assert!(f.choice.heldout_error < 1e-6);
        // Too few held-out rows is an error, not a choice.
        assert!(judge(
            &m,
            (&cand[..60], &base[..60]),
            (&cand[60..61], &base[60..61])
        )
        .is_err());
    }
}
