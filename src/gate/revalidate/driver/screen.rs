//! [`Concept`]'s looks under screening ([`super::super::screened`]).

use crate::activations::cache::ActCache;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::revalidate::ledger::Extender;
use crate::gate::revalidate::screened;
use crate::gate::revalidate::sequential::{settle, Settled, Thresholds};
use crate::monitor::Monitor;

use super::{scores_through, stop, Concept};

impl Concept<'_> {
    /// [`Concept::look`] under screening ([`super::super::screened`]): the first
    /// look runs every example through both models for every monitor of
    /// the concept; each look then reads the labels of the `k` unread
    /// examples that can move the open monitors' bounds most (labels a
    /// repair's verification read already count as read), and judges those
    /// monitors on worst-case bounds.
    pub(super) fn look_screened<'ck>(
        &mut self,
        k: usize,
        models: (&'ck Checkpoint, &'ck Checkpoint),
        (cache, policy): (&ActCache, &Policy),
        ledger: &Extender<'ck>,
    ) -> Result<Vec<usize>> {
        let (base, cand) = models;
        let n = self.data.labels.len();
        if self.screen.is_none() {
            let ms: Vec<&Monitor> = self.monitors.iter().map(|s| s.m).collect();
            let texts = &self.data.texts;
            // One side after the other: a whole test set is enough batches
            // for each side to spread over the pool itself (and its blocking
            // hand-off between batches must not run inside a rayon join).
            let (b, c) = {
                let mut kept = ledger.kept().borrow_mut();
                let (kb, kc) = kept.both();
                let b = scores_through(base, cache, &ms, texts, false, kb)?;
                (b, scores_through(cand, cache, &ms, texts, true, kc)?)
            };
            self.screen = Some(
                b.into_iter()
                    .zip(c)
                    .map(|((b, _), (c, x))| (b, c, x))
                    .collect(),
            );
        }
        let screen = self.screen.as_ref().ok_or_else(|| {
            Error::Usage("internal: a concept was judged before it was screened".into())
        })?;
        let open = self.unsettled();
        let cuts: Vec<Thresholds> = self
            .monitors
            .iter()
            .map(|s| Thresholds::same(s.m.meta.classifier.threshold))
            .collect();
        let threshold = |i: usize| cuts[i];
        // The unread examples (in the seeded stratified order), the most
        // influential on the open monitors first.
        let mut known = ledger.known(&self.name, n);
        let mut unread: Vec<usize> = self.order.iter().copied().filter(|&i| !known[i]).collect();
        let scored: Vec<(&[f64], &[f64], Thresholds)> = open
            .iter()
            .map(|&i| (screen[i].0.as_slice(), screen[i].1.as_slice(), threshold(i)))
            .collect();
        let inf = screened::influence(&scored, self.pop, &policy.metrics);
        screened::most_influential_first(&mut unread, &inf);
        let take = k.min(unread.len());
        ledger.read_labels(&self.name, n, &unread[..take], false);
        for &i in &unread[..take] {
            known[i] = true;
        }
        let whole = known.iter().all(|&k| k);
        let read: Vec<usize> = self.order.iter().copied().filter(|&i| known[i]).collect();
        let mut stale = Vec::new();
        for &i in &open {
            let (b, c, x) = &screen[i];
            let bd = screened::bounds(b, c, &self.data.labels, &known, threshold(i));
            let s = &mut self.monitors[i];
            let state = bd.as_ref().map_or(Settled::Open, |bd| {
                settle(bd, s.m.meta.base_metrics.auroc, s.floor, &policy.metrics)
            });
            s.bounds = bd;
            s.stop = stop(state, whole);
            if state == Settled::Stale {
                stale.push(i);
            }
            // The examples read so far: what the figures are reported on
            // (the candidate side's scores are in `screen`, which the bounds read).
            s.base = read.iter().map(|&j| b[j]).collect();
            s.x = read.iter().map(|&j| x[j].clone()).collect();
            s.labels = read.iter().map(|&j| self.data.labels[j]).collect();
        }
        self.used = read.len();
        Ok(stale)
    }
}
