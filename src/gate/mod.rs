//! `check`: the gate as one pipeline of plain data stages —
//! diff → features → risk → budgeted revalidation → realignment → verdict.
//! The CLI, the GitHub Action and the webhook server all call [`run`].

pub mod diff;
pub mod features;
pub mod risk;
pub mod policy;
pub mod revalidate;
pub mod repair;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::activations::cache::{cached_activations, ActCache, ActSpec};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::diff::Family;
use crate::gate::features::MonitorFeatures;
use crate::gate::policy::{Policy, Unverified, WeakMonitors};
use crate::gate::repair::realign;
pub use crate::gate::report::{
    Alternative, BudgetUse, DiffSummary, ModelInfo, MonitorReport, RealignReport, Report, Rung,
    RungReport, Status, Verdict, REPORT_SCHEMA, REPORT_VERSION,
};
use crate::gate::risk::{Risk, RiskModel};
use crate::model::Precision;
use crate::monitor::{self as mon, BaseCheck, Monitor};
use revalidate::EvalResult;

/// What one gate run is asked to check.
pub struct CheckRequest {
    pub base: String,
    pub candidate: String,
    pub monitors: PathBuf,
    /// Where the labeled sets are found (`<root>/<concept>/test.jsonl`).
    pub data: revalidate::DataSource,
    pub policy: Policy,
    pub risk_model: RiskModel,
    /// Revalidate every monitor regardless of the budget (ground truth for the grid).
    pub full_revalidation: bool,
    /// A name for the candidate (the zoo's condition), recorded in history.
    pub condition: Option<String>,
}

/// Progress callbacks: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Repaired monitors, to be written beside the report.
pub struct CheckOutput {
    pub report: Report,
    pub repaired: Vec<Monitor>,
}

type PairedActs = BTreeMap<(mon_pool::Key, usize), (Vec<Vec<f32>>, Vec<Vec<f32>>)>;

/// Everything before labeled data is spent: both models opened, the suite
/// checked against the base, the diff, paired corpus activations, features.
struct Prepared {
    base: Checkpoint,
    cand: Checkpoint,
    monitors: Vec<Monitor>,
    base_fp: String,
    cand_fp: String,
    diff: crate::gate::diff::DiffReport,
    corpus_len: usize,
    corpus_acts: PairedActs,
    features: BTreeMap<String, MonitorFeatures>,
}

/// Where the unlabeled prompts come from and how many to use.
pub struct Corpus<'a> {
    pub path: &'a Path,
    pub max_prompts: usize,
}

impl<'a> Corpus<'a> {
    pub fn of(policy: &'a Policy) -> Self {
        Corpus {
            path: &policy.realignment.corpus,
            max_prompts: policy.realignment.max_prompts,
        }
    }
}

fn prepare(
    base: &str,
    candidate: &str,
    monitors: Vec<Monitor>,
    corpus: Corpus,
    base_check: BaseCheck,
    secs: &mut BTreeMap<String, f64>,
    progress: Progress,
) -> Result<Prepared> {
    let t0 = Instant::now();
    let base = Checkpoint::open_str(base)?;
    let cand = Checkpoint::open_str(candidate)?;
    let base_fp = base.fingerprint()?;
    mon::check_suite_base(
        &monitors,
        &base_fp,
        base.config.hidden_size,
        base.config.num_layers,
        base_check,
    )?;
    let cand_fp = cand.fingerprint()?;
    let max_prompts = corpus.max_prompts.max(2);
    let mut corpus = crate::util::read_prompts(corpus.path)?;
    corpus.truncate(max_prompts);
    secs.insert("load".into(), t0.elapsed().as_secs_f64());
    progress("load", 1, 1);

    let t = Instant::now();
    let n_tensors = base.tensors().len();
    let mut done = 0;
    let diff = crate::gate::diff::diff(&base, &cand, &mut || {
        done += 1;
        progress("diff", done, n_tensors);
    })?;
    secs.insert("diff".into(), t.elapsed().as_secs_f64());

    // Paired corpus activations at every monitor block: features and realignment.
    let t = Instant::now();
    let cache = ActCache::from_env();
    let mut corpus_acts: PairedActs = BTreeMap::new();
    let mut features: BTreeMap<String, MonitorFeatures> = BTreeMap::new();
    for (pool, group, layers) in mon::by_pooling(&monitors) {
        let spec = ActSpec {
            pool,
            precision: Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
        };
        let total = 2 * corpus.len();
        let mut seen = 0;
        let ab = cached_activations(&base, &cache, &corpus, &layers, spec, &mut |n| {
            seen += n;
            progress("corpus activations", seen, total)
        })?;
        let ac = cached_activations(&cand, &cache, &corpus, &layers, spec, &mut |n| {
            seen += n;
            progress("corpus activations", seen, total)
        })?;
        for &l in &layers {
            corpus_acts.insert(
                (mon_pool::key(pool), l),
                (ab[&l].to_vec2::<f32>()?, ac[&l].to_vec2::<f32>()?),
            );
        }
        for m in group {
            let (b, c) = &corpus_acts[&(mon_pool::key(pool), m.meta.hook.layer)];
            features.insert(
                m.meta.name.clone(),
                crate::gate::features::monitor_features(m, &diff, b, c)?,
            );
        }
    }
    secs.insert("features".into(), t.elapsed().as_secs_f64());
    Ok(Prepared {
        base,
        cand,
        monitors,
        base_fp,
        cand_fp,
        diff,
        corpus_len: corpus.len(),
        corpus_acts,
        features,
    })
}

/// The diff and every monitor's pre-deployment features, without spending
/// labeled data (`probegate features`).
pub fn features_only(
    base: &str,
    candidate: &str,
    monitors: &Path,
    corpus: Corpus,
    base_check: BaseCheck,
    progress: Progress,
) -> Result<(crate::gate::diff::DiffReport, usize, Vec<MonitorFeatures>)> {
    let mut secs = BTreeMap::new();
    let p = prepare(
        base,
        candidate,
        mon::load_suite(monitors)?,
        corpus,
        base_check,
        &mut secs,
        progress,
    )?;
    Ok((p.diff, p.corpus_len, p.features.into_values().collect()))
}

/// Features and predicted risk per monitor, without spending labeled data.
pub fn predict_only(
    base: &str,
    candidate: &str,
    monitors: &Path,
    policy: &Policy,
    model: &RiskModel,
    progress: Progress,
) -> Result<Vec<(MonitorFeatures, Risk)>> {
    let mut secs = BTreeMap::new();
    let p = prepare(
        base,
        candidate,
        mon::load_suite(monitors)?,
        Corpus::of(policy),
        BaseCheck::Require,
        &mut secs,
        progress,
    )?;
    let mut out: Vec<(MonitorFeatures, Risk)> = p
        .features
        .into_values()
        .map(|f| {
            let r = model.predict(&f);
            (f, r)
        })
        .collect();
    out.sort_by(|a, b| b.1.p_stale.total_cmp(&a.1.p_stale));
    Ok(out)
}

pub fn run(req: &CheckRequest, progress: Progress) -> Result<CheckOutput> {
    let mut secs = BTreeMap::new();
    let t0 = Instant::now();
    let policy = &req.policy;
    // Test sets are read (and their hashes checked) before any compute, so a
    // wrong data directory fails fast.
    let mut suite = mon::load_suite(&req.monitors)?;
    // Monitors below the policy on their own base are a finding about the
    // suite, never a reason to fail the candidate.
    let mut findings = Vec::new();
    let weak: Vec<String> = suite
        .iter()
        .filter_map(|m| revalidate::weak_on_base(m, &policy.metrics))
        .collect();
    if !weak.is_empty() {
        match policy.suite.weak_monitors {
            WeakMonitors::Refuse => {
                return Err(Error::Usage(format!(
                    "the monitor suite does not meet policy `{}` on its own base (suite.weak_monitors = \"refuse\"): {}",
                    policy.name,
                    weak.join("; ")
                )))
            }
            WeakMonitors::Exclude => {
                suite.retain(|m| revalidate::weak_on_base(m, &policy.metrics).is_none());
                if suite.is_empty() {
                    return Err(Error::Usage(format!(
                        "every monitor is below policy `{}` on its own base and suite.weak_monitors excludes them: {}",
                        policy.name,
                        weak.join("; ")
                    )));
                }
                findings.extend(weak.iter().map(|w| format!("suite: {w}; left out of this check")));
            }
            WeakMonitors::Warn => findings.extend(weak.iter().map(|w| {
                format!("suite: {w}; judged only on what the candidate changed")
            })),
        }
    }
    let mut tests = BTreeMap::new();
    let mut trains = BTreeMap::new();
    let ladder = policy.recalibration.enabled
        || policy.retraining.enabled
        || (policy.realignment.enabled && policy.realignment.concept_texts);
    let roots = req.data.roots(&req.monitors)?;
    for m in &suite {
        if !tests.contains_key(&m.meta.concept) {
            let sets = revalidate::find_sets(&roots, m)?;
            if ladder {
                trains.insert(m.meta.concept.clone(), revalidate::train_set(&sets, m)?);
            }
            tests.insert(m.meta.concept.clone(), sets.test);
        }
    }
    let Prepared {
        base,
        cand,
        monitors,
        base_fp,
        cand_fp,
        diff,
        corpus_len,
        corpus_acts,
        features,
    } = prepare(
        &req.base,
        &req.candidate,
        suite,
        Corpus::of(policy),
        BaseCheck::Require,
        &mut secs,
        progress,
    )?;
    let cache = ActCache::from_env();
    let risks: BTreeMap<String, Risk> = features
        .iter()
        .map(|(n, f)| (n.clone(), req.risk_model.predict(f)))
        .collect();

    let concepts = plan(monitors.iter().map(|m| {
        (
            m.meta.concept.as_str(),
            policy.is_critical(&m.meta.name, &m.meta.concept),
            risks[&m.meta.name].p_stale,
        )
    }));
    let examples_full: usize = tests.values().map(|(_, d)| d.texts.len()).sum();

    let t = Instant::now();
    let mut used = 0usize;
    // Per monitor: metrics, scores, labels and the candidate's test activations
    // (kept so a repair is verified without another forward pass).
    struct Revalidated {
        eval: EvalResult,
        labels: Vec<u8>,
        x: Vec<Vec<f32>>,
    }
    let mut evals: BTreeMap<String, Revalidated> = BTreeMap::new();
    for (concept, critical) in &concepts {
        let (_, d) = &tests[concept];
        let n = d.texts.len();
        let over_examples = used + n > policy.budget.examples;
        let over_time = policy
            .budget
            .seconds
            .is_some_and(|s| t.elapsed().as_secs_f64() > s);
        if !req.full_revalidation && !critical && (over_examples || over_time) {
            continue;
        }
        used += n;
        let group: Vec<&Monitor> = monitors
            .iter()
            .filter(|m| &m.meta.concept == concept)
            .collect();
        for (pool, ms, layers) in mon::by_pooling(group.iter().copied()) {
            let spec = ActSpec {
                pool,
                precision: Precision::F32,
                batch_size: crate::util::DEFAULT_BATCH_SIZE,
            };
            let mut seen = 0;
            let acts = cached_activations(&cand, &cache, &d.texts, &layers, spec, &mut |k| {
                seen += k;
                progress(&format!("revalidating {concept}"), seen, n)
            })?;
            for m in ms {
                let x = &acts[&m.meta.hook.layer];
                let s = m.scores(x)?;
                let e = revalidate::evaluate(m, &s, &d.labels, crate::util::DEFAULT_SEED)?;
                evals.insert(
                    m.meta.name.clone(),
                    Revalidated {
                        eval: e,
                        labels: d.labels.clone(),
                        x: x.to_vec2()?,
                    },
                );
            }
        }
    }
    secs.insert("revalidation".into(), t.elapsed().as_secs_f64());

    // The repair ladder for stale monitors: label-free realignment, then a
    // threshold recalibrated on a few labels, then retraining — each verified
    // on the labeled test data already run, each only if the policy allows it.
    let t = Instant::now();
    let mut reports = Vec::new();
    let mut repaired = Vec::new();
    let mut ladder = LadderActs::new(&cache);
    for m in &monitors {
        if let Some(rv) = evals.get(&m.meta.name) {
            if !revalidate::stale_reasons(m, &rv.eval, &policy.metrics).is_empty() {
                ladder.need(m);
            }
        }
    }
    for (i, m) in monitors.iter().enumerate() {
        // The ladder can take minutes (forward passes, map fits): say where it is.
        progress("repair ladder", i, monitors.len());
        let name = &m.meta.name;
        let critical = policy.is_critical(name, &m.meta.concept);
        let Some(rv) = evals.get(name) else {
            reports.push(MonitorReport {
                name: name.clone(),
                concept: m.meta.concept.clone(),
                layer: m.meta.hook.layer,
                critical,
                status: Status::Unverified,
                rung: Rung::None,
                risk: risks[name].clone(),
                features: features[name].clone(),
                eval: None,
                stale_reasons: Vec::new(),
                realignment: None,
                recalibration: None,
                retraining: None,
                repaired_monitor: None,
            });
            continue;
        };
        let reasons = revalidate::stale_reasons(m, &rv.eval, &policy.metrics);
        let xt = candle_core::Tensor::new(rv.x.clone(), &candle_core::Device::Cpu)?;
        let verify = |fixed: &Monitor| -> Result<(EvalResult, Vec<String>)> {
            let after = revalidate::evaluate(
                fixed,
                &fixed.scores(&xt)?,
                &rv.labels,
                crate::util::DEFAULT_SEED,
            )?;
            let r = revalidate::stale_reasons(m, &after, &policy.metrics);
            Ok((after, r))
        };
        let mut status = if reasons.is_empty() {
            Status::Healthy
        } else {
            Status::Stale
        };
        let mut rung = Rung::None;
        let mut realignment = None;
        let mut recalibration = None;
        let mut retraining = None;
        // The monitor later rungs start from: realigned when the map was applied.
        let mut current = m.clone();
        if status == Status::Stale
            && policy.realignment.enabled
            && corpus_len >= policy.realignment.min_prompts
        {
            let (cb, cc) = &corpus_acts[&(mon_pool::key(m.meta.pooling), m.meta.hook.layer)];
            let (mut b, mut c) = (cb.clone(), cc.clone());
            if policy.realignment.concept_texts {
                // Unlabeled in-distribution texts go last, so the label-free
                // choice is judged on them (choose() holds out the tail).
                let (_, train) = &trains[&m.meta.concept];
                b.extend(ladder.get(&base, true, &train.texts, m)?.to_vec2::<f32>()?);
                c.extend(
                    ladder
                        .get(&cand, false, &train.texts, m)?
                        .to_vec2::<f32>()?,
                );
            }
            let (b, c) = (&b, &c);
            let fitted = realign::choose(m, c, b, 0.25)?;
            let choice = &fitted.choice;
            let fixed = fitted.chosen.compose(m, &cand_fp);
            let (after, mut reasons_after) = verify(&fixed)?;
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
                let alt = map.compose(m, &cand_fp);
                let (ae, ar) = verify(&alt)?;
                alternatives.push(Alternative {
                    method: *method,
                    heldout_error: *err,
                    auroc: ae.auroc,
                    balanced_accuracy: ae.balanced_accuracy,
                    would_pass: ar.is_empty(),
                });
            }
            let ok =
                choice.beats_identity() && (reasons_after.is_empty() || !policy.realignment.verify);
            if choice.beats_identity() {
                current = fixed;
            }
            if ok {
                status = Status::Repaired;
                rung = Rung::Realignment;
            }
            realignment = Some(RealignReport {
                method: choice.method,
                heldout_error: choice.heldout_error,
                identity_error: choice.identity_error,
                prompts: c.len(),
                after,
                stale_reasons_after: reasons_after,
                verified: policy.realignment.verify,
                written_to: None,
                alternatives,
            });
        }
        if status == Status::Stale && policy.recalibration.enabled {
            let (_, train) = &trains[&m.meta.concept];
            let (_, pick) = crate::monitor::train::stratified_split(
                &train.labels,
                (policy.recalibration.labels as f64 / train.labels.len().max(1) as f64).min(1.0),
                crate::util::DEFAULT_SEED,
            );
            let texts: Vec<String> = pick.iter().map(|&i| train.texts[i].clone()).collect();
            let labels: Vec<u8> = pick.iter().map(|&i| train.labels[i]).collect();
            let x = match ladder.peek(false, m) {
                Some(all) => {
                    let idx: Vec<u32> = pick.iter().map(|&i| i as u32).collect();
                    all.index_select(&candle_core::Tensor::new(idx, all.device())?, 0)?
                }
                None => monitor_acts(&cand, &cache, &texts, m)?,
            };
            used += texts.len();
            // Start from the original or the realigned monitor, whichever
            // separates the calibration labels better at its new threshold:
            // a map fitted on off-distribution prompts can cost ranking.
            let mut best: Option<(f64, Monitor, f64)> = None;
            let mut starts = vec![m.clone()];
            if current.meta.provenance.repaired_for.is_some() {
                starts.push(current.clone());
            }
            for start in starts {
                let s = start.scores(&x)?;
                let t = crate::monitor::metrics::choose_threshold(
                    &s,
                    &labels,
                    m.meta.classifier.threshold_rule,
                );
                if best
                    .as_ref()
                    .is_none_or(|(ba, _, _)| t.balanced_accuracy > *ba)
                {
                    best = Some((t.balanced_accuracy, start, t.threshold));
                }
            }
            let Some((_, start, threshold)) = best else {
                continue;
            };
            let mut fixed = start;
            fixed.meta.classifier.threshold = threshold;
            fixed.meta.provenance.repaired_for = Some(cand_fp.clone());
            let (after, reasons_after) = verify(&fixed)?;
            if reasons_after.is_empty() {
                status = Status::Repaired;
                rung = Rung::Recalibration;
                current = fixed;
            }
            recalibration = Some(RungReport {
                examples: texts.len(),
                threshold: Some(threshold),
                after,
                stale_reasons_after: reasons_after,
            });
        }
        if status == Status::Stale && policy.retraining.enabled {
            let (_, train) = &trains[&m.meta.concept];
            let x = ladder.get(&cand, false, &train.texts, m)?;
            used += train.texts.len();
            let tr = crate::monitor::train::train(
                &x.to_vec2::<f32>()?,
                &train.labels,
                &crate::monitor::train::TrainOptions {
                    threshold_rule: m.meta.classifier.threshold_rule,
                    ..Default::default()
                },
            )?;
            let mut fixed = m.clone();
            fixed.w = tr.w;
            fixed.mean = tr.mean;
            fixed.std = tr.std;
            fixed.meta.classifier.bias = tr.bias;
            fixed.meta.classifier.l2 = tr.l2;
            fixed.meta.classifier.threshold = tr.threshold.threshold;
            fixed.meta.provenance.repaired_for = Some(cand_fp.clone());
            let (after, reasons_after) = verify(&fixed)?;
            if reasons_after.is_empty() {
                status = Status::Repaired;
                rung = Rung::Retraining;
                current = fixed;
            }
            retraining = Some(RungReport {
                examples: train.texts.len(),
                threshold: Some(tr.threshold.threshold),
                after,
                stale_reasons_after: reasons_after,
            });
        }
        if status == Status::Repaired {
            if let (Some(r), Rung::Realignment) = (realignment.as_mut(), rung) {
                r.written_to = Some(format!("repaired/{name}"));
            }
            current.meta.provenance.repaired_for = Some(cand_fp.clone());
            // Same name as the monitor it replaces; the fingerprint tag says for what.
            current.meta.name = name.clone();
            repaired.push(current);
        } else if status == Status::Stale {
            rung = Rung::BeyondRepair;
        }
        reports.push(MonitorReport {
            name: name.clone(),
            concept: m.meta.concept.clone(),
            layer: m.meta.hook.layer,
            critical,
            status,
            rung,
            risk: risks[name].clone(),
            features: features[name].clone(),
            eval: Some(rv.eval.clone()),
            repaired_monitor: (status == Status::Repaired).then(|| format!("repaired/{name}")),
            stale_reasons: reasons,
            realignment,
            recalibration,
            retraining,
        });
    }
    progress("repair ladder", monitors.len(), monitors.len());
    secs.insert("realignment".into(), t.elapsed().as_secs_f64());
    reports.sort_by(|a, b| {
        b.risk
            .p_stale
            .total_cmp(&a.risk.p_stale)
            .then(a.name.cmp(&b.name))
    });

    let Decision {
        verdict,
        reasons,
        mut warnings,
    } = decide(policy, diff.family, &reports, corpus_len);
    warnings.splice(0..0, findings);
    secs.insert("total".into(), t0.elapsed().as_secs_f64());
    Ok(CheckOutput {
        report: Report {
            schema: REPORT_SCHEMA.into(),
            version: REPORT_VERSION,
            probegate_version: env!("CARGO_PKG_VERSION").into(),
            verdict,
            reasons,
            warnings,
            base: ModelInfo {
                reference: base.spec.clone(),
                fingerprint: base_fp,
            },
            candidate: ModelInfo {
                reference: cand.spec.clone(),
                fingerprint: cand_fp,
            },
            condition: req.condition.clone(),
            policy: policy.clone(),
            diff: DiffSummary {
                family: diff.family,
                evidence: diff.evidence.clone(),
                blocks: diff.blocks.clone(),
                kinds: diff.kinds.clone(),
            },
            budget: BudgetUse {
                examples_limit: policy.budget.examples,
                examples_used: used,
                examples_full,
                seconds_limit: policy.budget.seconds,
                full_revalidation: req.full_revalidation,
            },
            monitors: reports,
            corpus_prompts: corpus_len,
            seconds: secs,
        },
        repaired,
    })
}

/// Training-text activations for the repair ladder, per (side, concept,
/// pooling). The first request runs the concept's texts once through every
/// block any of its stale monitors reads, rather than once per monitor.
struct LadderActs<'a> {
    cache: &'a ActCache,
    layers: BTreeMap<(String, mon_pool::Key), Vec<usize>>,
    memo: BTreeMap<(bool, String, mon_pool::Key), BTreeMap<usize, candle_core::Tensor>>,
}

impl<'a> LadderActs<'a> {
    fn new(cache: &'a ActCache) -> Self {
        LadderActs {
            cache,
            layers: BTreeMap::new(),
            memo: BTreeMap::new(),
        }
    }

    fn need(&mut self, m: &Monitor) {
        let e = self
            .layers
            .entry((m.meta.concept.clone(), mon_pool::key(m.meta.pooling)))
            .or_default();
        if !e.contains(&m.meta.hook.layer) {
            e.push(m.meta.hook.layer);
        }
    }

    fn memo_key(on_base: bool, m: &Monitor) -> (bool, String, mon_pool::Key) {
        (
            on_base,
            m.meta.concept.clone(),
            mon_pool::key(m.meta.pooling),
        )
    }

    /// Already computed: `m`'s training-text activations on one side.
    fn peek(&self, on_base: bool, m: &Monitor) -> Option<&candle_core::Tensor> {
        self.memo
            .get(&Self::memo_key(on_base, m))?
            .get(&m.meta.hook.layer)
    }

    fn get(
        &mut self,
        ck: &Checkpoint,
        on_base: bool,
        texts: &[String],
        m: &Monitor,
    ) -> Result<candle_core::Tensor> {
        if let Some(t) = self.peek(on_base, m) {
            return Ok(t.clone());
        }
        let mut layers = self
            .layers
            .get(&(m.meta.concept.clone(), mon_pool::key(m.meta.pooling)))
            .cloned()
            .unwrap_or_default();
        if !layers.contains(&m.meta.hook.layer) {
            layers.push(m.meta.hook.layer);
        }
        layers.sort_unstable();
        let spec = ActSpec {
            pool: m.meta.pooling,
            precision: Precision::F32,
            batch_size: crate::util::DEFAULT_BATCH_SIZE,
        };
        let acts = cached_activations(ck, self.cache, texts, &layers, spec, &mut |_| {})?;
        let slot = self.memo.entry(Self::memo_key(on_base, m)).or_default();
        slot.extend(acts);
        slot.get(&m.meta.hook.layer)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("no activations at block {}", m.meta.hook.layer)))
    }
}

/// Pooled activations of `texts` at `m`'s block through `ck` (cached).
fn monitor_acts(
    ck: &Checkpoint,
    cache: &ActCache,
    texts: &[String],
    m: &Monitor,
) -> Result<candle_core::Tensor> {
    let l = m.meta.hook.layer;
    let spec = ActSpec {
        pool: m.meta.pooling,
        precision: Precision::F32,
        batch_size: crate::util::DEFAULT_BATCH_SIZE,
    };
    let mut acts = cached_activations(ck, cache, texts, &[l], spec, &mut |_| {})?;
    acts.remove(&l)
        .ok_or_else(|| Error::Usage(format!("no activations at block {l}")))
}

/// Revalidation order over concepts (a concept's test set serves all its
/// monitors): those holding a critical monitor first, then by their riskiest
/// monitor. Input: (concept, critical, p_stale) per monitor.
pub fn plan<'a>(monitors: impl IntoIterator<Item = (&'a str, bool, f64)>) -> Vec<(String, bool)> {
    let mut by: BTreeMap<&str, (bool, f64)> = BTreeMap::new();
    for (c, crit, risk) in monitors {
        let e = by.entry(c).or_insert((false, 0.0));
        e.0 |= crit;
        e.1 = e.1.max(risk);
    }
    let mut v: Vec<(&str, bool, f64)> = by.into_iter().map(|(c, (k, r))| (c, k, r)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)));
    v.into_iter().map(|(c, k, _)| (c.to_string(), k)).collect()
}

/// Replays a full-revalidation report (the grid's ground truth) as the
/// budgeted gate would have run it under `policy` with risks from `model`:
/// the monitors the budget would not have reached become unverified.
pub fn replay_budgeted(full: &Report, policy: &Policy, model: &RiskModel) -> Report {
    let mut r = full.clone();
    for m in r.monitors.iter_mut() {
        m.risk = model.predict(&m.features);
        m.critical = policy.is_critical(&m.name, &m.concept);
    }
    let order = plan(
        r.monitors
            .iter()
            .map(|m| (m.concept.as_str(), m.critical, m.risk.p_stale)),
    );
    let size = |c: &str| {
        r.monitors
            .iter()
            .find(|m| m.concept == c)
            .and_then(|m| m.eval.as_ref())
            .map(|e| e.n)
            .unwrap_or(0)
    };
    let mut used = 0;
    let mut reached = Vec::new();
    for (c, crit) in &order {
        let n = size(c);
        if *crit || used + n <= policy.budget.examples {
            used += n;
            reached.push(c.clone());
        }
    }
    for m in r.monitors.iter_mut() {
        if !reached.contains(&m.concept) {
            m.status = Status::Unverified;
        }
    }
    let Decision {
        verdict: v,
        reasons,
        warnings,
    } = decide(policy, r.diff.family, &r.monitors, r.corpus_prompts);
    r.verdict = v;
    r.reasons = reasons;
    r.warnings = warnings;
    r.budget.examples_used = used;
    r.budget.examples_limit = policy.budget.examples;
    r.budget.full_revalidation = false;
    r
}

/// The verdict and its reasons, from the monitors' statuses under `policy`.
/// What the policy makes of the monitors' states: the verdict, the reasons
/// it fails (empty unless it does) and the warnings a reviewer should read.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn decide(
    policy: &Policy,
    family: Family,
    monitors: &[MonitorReport],
    corpus_prompts: usize,
) -> Decision {
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    // A candidate identical to its base changed nothing, so nothing can be
    // its fault: whatever a monitor shows is a fact about the suite.
    let identical = family == Family::Identical;
    if let Some(allowed) = &policy.allowed_families {
        if !allowed.contains(&family) && !identical {
            fail.push(format!(
                "the candidate is a {family:?} update; policy `{}` allows only {allowed:?}",
                policy.name
            ));
        }
    }
    for m in monitors {
        match m.status {
            Status::Stale => {
                let tried: Vec<&str> = [
                    (Rung::Realignment, m.realignment.is_some()),
                    (Rung::Recalibration, m.recalibration.is_some()),
                    (Rung::Retraining, m.retraining.is_some()),
                ]
                .iter()
                .filter(|(_, t)| *t)
                .map(|(n, _)| n.as_str())
                .collect();
                fail.push(format!(
                    "{}{} is stale{}: {}",
                    m.name,
                    if m.critical { " (critical)" } else { "" },
                    if tried.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} did not repair it", tried.join(", "))
                    },
                    m.stale_reasons.join("; ")
                ))
            }
            Status::Repaired if !policy.may_pass(m.rung) => fail.push(format!(
                "{} is stale ({}); {} repaired it but policy `{}` does not let that rung pass",
                m.name,
                m.stale_reasons.join("; "),
                m.rung,
                policy.name
            )),
            Status::Unverified => {
                let msg = format!(
                    "{} was not revalidated within the budget (predicted risk {:.2})",
                    m.name, m.risk.p_stale
                );
                match policy.unverified {
                    Unverified::Fail => fail.push(msg),
                    Unverified::Warn => warn.push(msg),
                }
            }
            _ => {}
        }
    }
    if identical {
        warn.extend(fail.drain(..).map(|f| {
            format!("suite (the candidate is identical to its base, so this is not the candidate's doing): {f}")
        }));
    }
    if policy.realignment.enabled && corpus_prompts < policy.realignment.min_prompts {
        warn.push(format!(
            "realignment was not attempted: {corpus_prompts} corpus prompts, the policy needs {}",
            policy.realignment.min_prompts
        ));
    }
    let any_repaired = monitors.iter().any(|m| m.status == Status::Repaired);
    let verdict = if !fail.is_empty() {
        Verdict::Fail
    } else if any_repaired {
        Verdict::PassWithRepairs
    } else {
        Verdict::Pass
    };
    Decision {
        verdict,
        reasons: fail,
        warnings: warn,
    }
}

/// Writes report.json, report.md, report.html and the repaired monitors.
pub fn write_outputs(out: &Path, output: &CheckOutput) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for m in &output.repaired {
        m.save(&out.join("repaired").join(&m.meta.name))?;
    }
    crate::gate::report::write_all(out, &output.report)
}

/// What the CLI writes when the gate could not evaluate: never a file that
/// reads like a pass.
pub fn write_error_report(out: &Path, err: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let json = serde_json::json!({
        "schema": REPORT_SCHEMA, "version": REPORT_VERSION,
        "verdict": "error", "error": err,
    });
    let p = out.join("report.json");
    std::fs::write(&p, serde_json::to_string_pretty(&json).unwrap_or_default())
        .map_err(|e| Error::io(&p, e))?;
    // The error quotes user input (paths, tensor names): a fence longer than
    // any backtick run in it, so it cannot close early and forge a heading.
    let md = format!(
        "## probegate: could not evaluate\n\n{}\n\nThis is not a pass.\n",
        crate::gate::report::fenced(err)
    );
    let p = out.join("report.md");
    std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
    let _ = std::fs::remove_file(out.join("report.html"));
    Ok(())
}

/// Pool as an ordered key (Pool is not Ord).
mod mon_pool {
    use crate::model::Pool;
    pub type Key = u8;
    pub fn key(p: Pool) -> Key {
        match p {
            Pool::Last => 0,
            Pool::Mean => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_match_report_json() {
        for v in [Verdict::Pass, Verdict::PassWithRepairs, Verdict::Fail] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }

    fn policy() -> Policy {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.toml"),
        )
        .unwrap();
        Policy::parse(&text, Path::new("policies/default.toml")).unwrap()
    }

    fn monitor(name: &str, status: Status, critical: bool) -> MonitorReport {
        let f = MonitorFeatures {
            monitor: name.into(),
            concept: name.split('-').next().unwrap_or(name).into(),
            layer: 15,
            depth_fraction: 0.5,
            base_auroc: 0.99,
            weight_norm: 1.0,
            family: Family::LowRankAdapter,
            change_below: 0.01,
            max_stable_rank: 4.0,
            act_cosine: 0.99,
            projected_shift: 0.1,
            score_ks: 0.1,
            flip_rate: 0.01,
            base_margin: 1.0,
        };
        MonitorReport {
            name: name.into(),
            concept: f.concept.clone(),
            layer: 15,
            critical,
            status,
            rung: if status == Status::Repaired {
                Rung::Realignment
            } else {
                Rung::None
            },
            risk: Risk {
                p_stale: 0.3,
                drivers: vec![],
            },
            features: f,
            eval: None,
            stale_reasons: if matches!(status, Status::Stale | Status::Repaired) {
                vec!["AUROC 0.99 → 0.90".into()]
            } else {
                vec![]
            },
            realignment: None,
            recalibration: None,
            retraining: None,
            repaired_monitor: None,
        }
    }

    #[test]
    fn every_verdict_path() {
        let p = policy();
        let fam = Family::LowRankAdapter;
        let healthy = monitor("toxicity-l15", Status::Healthy, false);
        let Decision {
            verdict: v,
            reasons: r,
            warnings: _,
        } = decide(&p, fam, std::slice::from_ref(&healthy), 600);
        assert_eq!((v, r.len()), (Verdict::Pass, 0));

        let repaired = monitor("privacy_pii-l15", Status::Repaired, true);
        let Decision {
            verdict: v,
            reasons: _,
            warnings: _,
        } = decide(&p, fam, &[healthy.clone(), repaired.clone()], 600);
        assert_eq!(v, Verdict::PassWithRepairs);

        // Realignment may not pass a candidate under the strict policy.
        let mut strict = p.clone();
        strict.realignment.may_pass = false;
        let Decision {
            verdict: v,
            reasons: r,
            warnings: _,
        } = decide(&strict, fam, &[repaired], 600);
        assert_eq!(v, Verdict::Fail);
        assert!(r[0].contains("does not let that rung pass"), "{r:?}");

        let stale = monitor("privacy_pii-l22", Status::Stale, true);
        let Decision {
            verdict: v,
            reasons: r,
            warnings: _,
        } = decide(&p, fam, &[healthy.clone(), stale], 600);
        assert_eq!(v, Verdict::Fail);
        assert!(r[0].contains("(critical) is stale"), "{r:?}");

        // Unverified: a warning under default, a failure when the policy says so.
        let unv = monitor("toxicity-l7", Status::Unverified, false);
        let Decision {
            verdict: v,
            reasons: r,
            warnings: w,
        } = decide(&p, fam, &[healthy.clone(), unv.clone()], 600);
        assert_eq!((v, r.len(), w.len()), (Verdict::Pass, 0, 1));
        let mut failing = p.clone();
        failing.unverified = Unverified::Fail;
        let Decision {
            verdict: v,
            reasons: _,
            warnings: _,
        } = decide(&failing, fam, &[healthy.clone(), unv], 600);
        assert_eq!(v, Verdict::Fail);

        // A family the policy does not allow fails even with healthy monitors.
        let mut qonly = p.clone();
        qonly.allowed_families = Some(vec![Family::Identical, Family::Quantization]);
        let Decision {
            verdict: v,
            reasons: r,
            warnings: _,
        } = decide(&qonly, fam, std::slice::from_ref(&healthy), 600);
        assert_eq!(v, Verdict::Fail);
        assert!(r[0].contains("LowRankAdapter"), "{r:?}");
        let Decision {
            verdict: v,
            reasons: _,
            warnings: _,
        } = decide(
            &qonly,
            Family::Quantization,
            std::slice::from_ref(&healthy),
            600,
        );
        assert_eq!(v, Verdict::Pass);

        // Nothing the suite shows fails a candidate identical to its base,
        // not even under a policy that fails unverified monitors.
        let stale = monitor("privacy_pii-l22", Status::Stale, true);
        let unv = monitor("toxicity-l7", Status::Unverified, false);
        for pol in [&p, &failing, &qonly] {
            let Decision {
                verdict: v,
                reasons: r,
                warnings: w,
            } = decide(pol, Family::Identical, &[stale.clone(), unv.clone()], 600);
            assert_eq!((v, r.len()), (Verdict::Pass, 0), "{r:?}");
            assert!(
                w.iter().any(|x| x.contains("identical to its base")),
                "{w:?}"
            );
        }

        // Too small a corpus: realignment not attempted, said so.
        let Decision {
            verdict: _,
            reasons: _,
            warnings: w,
        } = decide(&p, fam, &[healthy], 10);
        assert!(w.iter().any(|x| x.contains("not attempted")), "{w:?}");
    }

    /// Verdict rules as data (cargo-semver-checks keeps its lints' cases the
    /// same way): tests/cases/verdict/<case>/case.json holds the policy (a
    /// shipped name or a file beside it), the update family, the monitors'
    /// states and the decision expected; reasons and warnings match by
    /// prefix, one each, in order.
    #[test]
    fn verdict_cases() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/verdict");
        let mut cases: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        assert!(cases.len() >= 9, "{cases:?}");
        let mut failures = Vec::new();
        for dir in cases {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let case: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            let policy = Policy::load(&Policy::resolve(
                case["policy"].as_str().unwrap(),
                Some(&dir),
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let family: Family = serde_json::from_value(case["family"].clone()).unwrap();
            let monitors: Vec<MonitorReport> = case["monitors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let status: Status = serde_json::from_value(m["status"].clone()).unwrap();
                    let mut r = monitor(
                        m["name"].as_str().unwrap(),
                        status,
                        m["critical"].as_bool().unwrap_or(false),
                    );
                    if let Some(rung) = m.get("rung") {
                        r.rung = serde_json::from_value(rung.clone()).unwrap();
                    }
                    r.stale_reasons = m["reasons"]
                        .as_array()
                        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default();
                    if let Some(p) = m["p_stale"].as_f64() {
                        r.risk.p_stale = p;
                    }
                    // The rungs tried: a report of each (its figures do not enter the decision).
                    for t in m["tried"].as_array().into_iter().flatten() {
                        let after = revalidate::EvalResult {
                            monitor: r.name.clone(),
                            layer: 15,
                            n: 180,
                            auroc: 0.9,
                            auroc_ci95: [0.85, 0.95],
                            balanced_accuracy: 0.8,
                            tpr: 0.8,
                            fpr: 0.2,
                            threshold: 0.5,
                            base_auroc: 0.99,
                            delta_auroc: -0.09,
                            base_balanced_accuracy: 0.9,
                        };
                        let rung = RungReport {
                            examples: 60,
                            threshold: None,
                            after: after.clone(),
                            stale_reasons_after: r.stale_reasons.clone(),
                        };
                        match t.as_str().unwrap() {
                            "realignment" => {
                                r.realignment = Some(RealignReport {
                                    method: realign::Method::MeanShift,
                                    heldout_error: 0.1,
                                    identity_error: 0.2,
                                    prompts: 600,
                                    after,
                                    stale_reasons_after: r.stale_reasons.clone(),
                                    verified: true,
                                    written_to: None,
                                    alternatives: vec![],
                                })
                            }
                            "recalibration" => r.recalibration = Some(rung),
                            "retraining" => r.retraining = Some(rung),
                            other => panic!("{name}: unknown rung {other}"),
                        }
                    }
                    r
                })
                .collect();
            let corpus = case["corpus_prompts"].as_u64().unwrap_or(600) as usize;
            let d = decide(&policy, family, &monitors, corpus);
            let e = &case["expect"];
            let want_verdict: Verdict = serde_json::from_value(e["verdict"].clone()).unwrap();
            let matches = |got: &[String], want: &serde_json::Value| {
                let want: Vec<&str> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect();
                got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g.starts_with(w))
            };
            if d.verdict != want_verdict
                || !matches(&d.reasons, &e["reasons"])
                || !matches(&d.warnings, &e["warnings"])
            {
                failures.push(format!("{name}: got {d:#?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Bad policies and the error each must give, file, line and field:
    /// tests/cases/policy/<case>.toml, whose `# expect:` line holds the text.
    #[test]
    fn bad_policy_cases() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/policy");
        let mut n = 0;
        for e in std::fs::read_dir(&root).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let want = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", p.display()));
            let name = p.file_name().unwrap();
            let got = Policy::parse(&text, Path::new(name))
                .unwrap_err()
                .to_string();
            assert!(
                got.starts_with(want),
                "{}:\n got  {got}\n want {want}",
                p.display()
            );
            n += 1;
        }
        assert!(n >= 6);
    }
}
