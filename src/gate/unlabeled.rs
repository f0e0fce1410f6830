//! The stages before the gate spends a label, as [`super::run`] and the
//! label-free commands (`probegate features`, `probegate risk`) share
//! them: open both models, diff them, compute the features the risk model
//! reads.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::activations::cache::{ActCache, Kept};
use crate::error::Result;
use crate::gate::deferred::Trains;
use crate::gate::diff::{self, DiffReport};
use crate::gate::features::{self, MonitorFeatures};
use crate::gate::policy::Policy;
use crate::gate::prepare::{self, Corpus, Progress};
use crate::gate::revalidate::{data::DataSource, LabeledData};
use crate::gate::risk::{Risk, RiskModel};
use crate::monitor::{self as mon, BaseCheck, Monitor};

/// Where the policy's unlabeled prompts come from.
pub(super) fn corpus_of(policy: &Policy) -> Corpus<'_> {
    Corpus {
        path: &policy.realignment.corpus,
        max_prompts: policy.realignment.max_prompts,
    }
}

/// Whether a run under `policy` reads the concepts' training splits (its
/// repair ladder spends them), and so computes the concept features.
pub(super) fn reads_train(policy: &Policy) -> bool {
    policy.recalibration.enabled
        || policy.retraining.enabled
        || (policy.realignment.enabled && policy.realignment.concept_texts)
}

/// Runs `f`, recording its wall time under `stage`.
pub(super) fn timed<T>(
    secs: &mut BTreeMap<String, f64>,
    stage: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let t = Instant::now();
    let out = f()?;
    secs.insert(stage.into(), t.elapsed().as_secs_f64());
    Ok(out)
}

fn diff_models(models: &prepare::Prepared, progress: Progress) -> Result<DiffReport> {
    let n_tensors = models.base.tensors().len();
    let mut done = 0;
    diff::diff(&models.base, &models.cand, &mut || {
        done += 1;
        progress("diff", done, n_tensors);
    })
}

/// prepare → diff, each timed into `secs`: the models the later stages
/// run and the update they differ by.
pub(super) fn load_and_diff(
    (base, candidate): (&str, &str),
    suite: &[Monitor],
    corpus: Corpus,
    base_check: BaseCheck,
    secs: &mut BTreeMap<String, f64>,
    progress: Progress,
) -> Result<(prepare::Prepared, DiffReport)> {
    let models = timed(secs, "load", || {
        prepare::prepare(base, candidate, suite, corpus, base_check)
    })?;
    progress("load", 1, 1);
    let diff = timed(secs, "diff", || diff_models(&models, progress))?;
    Ok((models, diff))
}

/// What the features stage produces: the corpus's paired activations (`None`
/// when it did not run the corpus) and every monitor's features.
type Unlabeled = (
    Option<features::PairedActs>,
    BTreeMap<String, MonitorFeatures>,
);

/// The features stage, timed into `secs`: all that `features` and `risk`
/// do before the gate spends labels. `with_corpus`: run the corpus and
/// compute the corpus features (the risk model reads one of them, or the
/// caller shows them all). `own`: the monitors whose concept features are
/// computed now (the others' are left empty: [`crate::gate::deferred`]). `kept`: the
/// models the run keeps loaded for its later stages.
#[allow(clippy::too_many_arguments)]
pub(super) fn unlabeled<'ck>(
    (models, diff): (&'ck prepare::Prepared, &DiffReport),
    (suite, own, trains): (&[Monitor], &[Monitor], &Trains),
    with_corpus: bool,
    (cache, kept): (&ActCache, Option<&RefCell<Kept<'ck>>>),
    secs: &mut BTreeMap<String, f64>,
    progress: Progress,
) -> Result<Unlabeled> {
    timed(secs, "features", || {
        let acts = with_corpus
            .then(|| features::corpus_activations(models, suite, (cache, kept), progress))
            .transpose()?;
        let own = features::concept_activations(models, own, trains, (cache, kept), progress)?;
        let f = features::features(suite, diff, acts.as_ref(), &own)?;
        Ok((acts, f))
    })
}

/// The diff and every monitor's pre-deployment features, without spending
/// labeled data (`probegate features`), in the suite's order; the corpus
/// features only `with_corpus`.
pub fn features_only(
    (base, candidate, monitors): (&str, &str, &Path),
    data: Option<&DataSource>,
    (corpus, with_corpus): (Corpus, bool),
    base_check: BaseCheck,
    progress: Progress,
) -> Result<FeaturesOnly> {
    let suite = mon::load_suite(monitors)?;
    // The concept features read each concept's training split, as the gate's
    // do. A named data directory must hold them; the default lookup may find
    // none (a suite shipped without data), and then they are left out
    // (`None`, which the risk model reads as its training mean) and said so.
    let (trains, note) = match data.map(|d| (d, LabeledData::find(&suite, monitors, d, true))) {
        None => (BTreeMap::new(), None),
        Some((_, Ok(found))) => (found.trains, None),
        Some((DataSource::Auto, Err(e))) => (
            BTreeMap::new(),
            Some(format!(
                "no training splits for the concept features, which are left out: {e}"
            )),
        ),
        Some((DataSource::Dir(_), Err(e))) => return Err(e),
    };
    let mut secs = BTreeMap::new();
    let (models, diff) = load_and_diff(
        (base, candidate),
        &suite,
        corpus,
        base_check,
        &mut secs,
        progress,
    )?;
    let (_, features) = unlabeled(
        (&models, &diff),
        (&suite, &suite, &trains),
        with_corpus,
        (&ActCache::from_env(), None),
        &mut secs,
        progress,
    )?;
    Ok(FeaturesOnly {
        corpus_prompts: models.corpus.len(),
        diff,
        features: features.into_values().collect(),
        note,
    })
}

/// What `probegate features` and `probegate risk` show: the diff and every
/// monitor's features, and why the concept features are missing if they are.
pub struct FeaturesOnly {
    pub diff: DiffReport,
    pub corpus_prompts: usize,
    pub features: Vec<MonitorFeatures>,
    pub note: Option<String>,
}

/// Features and predicted risk per monitor, riskiest first, without
/// spending labeled data (`probegate risk`).
pub fn predict_only(
    (base, candidate, monitors): (&str, &str, &Path),
    data: &DataSource,
    policy: &Policy,
    model: &RiskModel,
    progress: Progress,
) -> Result<Predicted> {
    // The features the gate would compute under this policy.
    let f = features_only(
        (base, candidate, monitors),
        reads_train(policy).then_some(data),
        (corpus_of(policy), model.reads_corpus()),
        BaseCheck::Require,
        progress,
    )?;
    let mut out: Vec<(MonitorFeatures, Risk)> = f
        .features
        .into_iter()
        .map(|f| {
            let r = model.predict(&f);
            (f, r)
        })
        .collect();
    out.sort_by(|a, b| b.1.p_stale.total_cmp(&a.1.p_stale));
    Ok(Predicted {
        monitors: out,
        note: f.note,
    })
}

/// Every monitor's features and risk, riskiest first, and why the concept
/// features are missing if they are (`probegate risk`).
pub struct Predicted {
    pub monitors: Vec<(MonitorFeatures, Risk)>,
    pub note: Option<String>,
}
