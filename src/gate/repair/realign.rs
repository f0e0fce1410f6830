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
use crate::gate::repair::context::{Attempt, Context, LadderActs, Verifier};
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
    let zb = logits(m, &base[k..]);
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
    let identity_error = mse(&logits(m, &cand[k..]));
    let mut best: Option<(f64, Method)> = None;
    let mut errors = Vec::new();
    for map in fit_all(&cand[..k], &base[..k])? {
        let repaired = map.compose(m, "");
        let err = mse(&logits(&repaired, &cand[k..]));
        errors.push((map.method, err));
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, map.method));
        }
    }
    let (err, method) = best.ok_or_else(|| Error::Usage("no realignment method fitted".into()))?;
    let all = fit_all(cand, base)?;
    let chosen = all
        .iter()
        .find(|a| a.method == method)
        .cloned()
        .ok_or_else(|| Error::Usage("the chosen realignment method was not refitted".into()))?;
    Ok(Fitted {
        chosen,
        choice: Choice {
            method,
            heldout_error: err,
            errors,
            identity_error,
        },
        all,
    })
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
    /// Labeled metrics of the repaired monitor through the candidate.
    pub after: EvalResult,
    pub stale_reasons_after: Vec<String>,
    pub verified: bool,
    /// Where the repaired monitor was written (relative to the output directory).
    pub written_to: Option<String>,
    /// Every method's labeled result, for auditing the label-free choice
    /// (never used to choose: that would spend the labels the choice must not see).
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
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
/// policy says so, the concept's unlabeled training texts), choose one on
/// held-out unlabeled prompts, and verify it on the labeled test data.
/// `fixed` is the realigned monitor whenever the map beat leaving it alone,
/// even when it does not repair: later rungs may start from it.
pub fn rung(
    cx: &Context,
    acts: &mut LadderActs,
    m: &Monitor,
    verifier: &Verifier,
) -> Result<Attempt<RealignReport>> {
    let policy = cx.policy;
    let paired = cx.corpus_acts.at(m)?;
    let (mut b, mut c) = (paired.base.clone(), paired.cand.clone());
    if policy.realignment.concept_texts {
        // Unlabeled in-distribution texts go last, so the label-free choice
        // is judged on them (choose() holds out the tail).
        let train = cx.train(m)?;
        b.extend(
            acts.get(&cx.models.base, true, &train.texts, m)?
                .to_vec2::<f32>()?,
        );
        c.extend(
            acts.get(&cx.models.cand, false, &train.texts, m)?
                .to_vec2::<f32>()?,
        );
    }
    let fitted = choose(m, &c, &b, 0.25)?;
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
            prompts: c.len(),
            after,
            stale_reasons_after: reasons_after,
            verified: policy.realignment.verify,
            written_to: None,
            alternatives,
        },
        fixed: choice.beats_identity().then_some(fixed),
        repaired,
    })
}
