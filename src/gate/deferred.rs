//! Under `budget.stop_at_verdict` with sequential revalidation, the concept
//! features of every concept that is not critical wait until revalidation
//! gets past the critical ones. Critical concepts go first whatever their
//! risk, so only their own order needs their risk up front; a failing
//! candidate is mostly decided there (the README's demo: at self_harm's
//! 120th example), and then the 96 training texts per other concept, two
//! forward passes each, would only have priced monitors nobody looks at.
//! A run that goes on computes them before any other concept's first look,
//! so its order, its risks and its report are what they were with them
//! computed up front; a run decided before reports those monitors' risk
//! as predicted without them (their `concept_*` features empty, which the
//! risk model reads as its training mean, as `probegate risk` does without
//! training splits). Their risk never decides anything there: the verdict
//! was already fail, and monitors cut short by it are a warning.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::activations::cache::{ActCache, Kept};
use crate::error::Result;
use crate::gate::diff::DiffReport;
use crate::gate::features::{self, LazyCorpus, MonitorFeatures};
use crate::gate::policy::Policy;
use crate::gate::prepare::{Prepared, Progress};
use crate::gate::repair::Early;
use crate::gate::revalidate::{self, OnSettled, Revalidated};
use crate::gate::risk::{Risk, RiskModel};
use crate::monitor::Monitor;

/// A concept's training split as read (path, texts and labels).
pub type Trains = BTreeMap<String, (std::path::PathBuf, crate::monitor::data::Labeled)>;

/// What the deferred features are computed from.
pub struct Sources<'r> {
    pub models: &'r Prepared,
    pub suite: &'r [Monitor],
    pub trains: &'r Trains,
    pub cache: &'r ActCache,
    /// The models the run keeps loaded.
    pub kept: Option<&'r RefCell<Kept<'r>>>,
    pub diff: &'r DiffReport,
    /// The corpus, read by the features only when the features stage ran
    /// it (`with_corpus`): the same inputs as the monitors computed first.
    pub corpus: &'r LazyCorpus<'r>,
    pub with_corpus: bool,
    pub risk_model: &'r RiskModel,
    pub policy: &'r Policy,
}

/// [`Early`], with the features and risks of the monitors outside the
/// critical concepts completed when revalidation first needs them.
pub struct Deferred<'r, 'a, 'c> {
    early: Early<'a, 'c>,
    src: Sources<'r>,
    /// The monitors whose concept features wait.
    later: Vec<Monitor>,
    features: BTreeMap<String, MonitorFeatures>,
    risks: BTreeMap<String, Risk>,
    seconds: f64,
}

impl<'r, 'a, 'c> Deferred<'r, 'a, 'c> {
    pub fn new(
        early: Early<'a, 'c>,
        src: Sources<'r>,
        later: Vec<Monitor>,
        features: BTreeMap<String, MonitorFeatures>,
        risks: BTreeMap<String, Risk>,
    ) -> Self {
        Deferred {
            early,
            src,
            later,
            features,
            risks,
            seconds: 0.0,
        }
    }

    /// The hook, the features and risks as they ended, and the seconds the
    /// deferred features took.
    pub fn finish(
        self,
    ) -> (
        Early<'a, 'c>,
        BTreeMap<String, MonitorFeatures>,
        BTreeMap<String, Risk>,
        f64,
    ) {
        (self.early, self.features, self.risks, self.seconds)
    }
}

impl OnSettled for Deferred<'_, '_, '_> {
    fn stale(&mut self, settled: &[(&Monitor, Revalidated)], progress: Progress) -> Result<()> {
        self.early.stale(settled, progress)
    }

    fn decided(&self) -> bool {
        self.early.decided()
    }

    fn before_the_rest(&mut self, progress: Progress) -> Result<Option<Vec<String>>> {
        if self.later.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let s = &self.src;
        let own = features::concept_activations(
            s.models,
            &self.later,
            s.trains,
            (s.cache, s.kept),
            progress,
        )?;
        let acts = if s.with_corpus {
            Some(s.corpus.get()?)
        } else {
            None
        };
        for (name, f) in features::features(&self.later, s.diff, acts, &own)? {
            self.risks.insert(name.clone(), s.risk_model.predict(&f));
            self.features.insert(name, f);
        }
        self.later.clear();
        self.early.repredict(&self.risks, &self.features)?;
        self.seconds = t.elapsed().as_secs_f64();
        let order = revalidate::plan_suite(s.suite, s.policy, &self.risks);
        Ok(Some(order.into_iter().map(|(c, _)| c).collect()))
    }
}
