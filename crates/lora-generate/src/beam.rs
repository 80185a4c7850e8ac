//! Beam search, step by step as transformers' `_beam_search` does it.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;

use crate::search::{expand, Search};
use crate::token_mask::per_row;
use crate::{
    top_candidates, Candidate, EarlyStopping, EncoderDecoderModel, GenerateOutput,
    GenerationConfig, GenerationError,
};

/// Runs beam search from the encoded prompts.
pub(crate) fn beam_search<B: Backend, M: EncoderDecoderModel<B>>(
    search: Search<'_, B, M>,
    state: M::State,
    prompts: &[Vec<u32>],
) -> Result<GenerateOutput<B>, GenerationError> {
    let config = search.config;
    let beams = config.num_beams;
    let batch = prompts.len();
    let vocab = search.model.vocab_size();
    let (mut state, encoder_ids) = expand(&search, state, prompts, beams);
    let eos = search.special.eos.clone();
    // transformers fills unused positions with `pad_token_id or eos_token_id`.
    let fill = if search.special.pad != 0 {
        search.special.pad
    } else {
        eos[0]
    };
    // Enough candidates that `beams` of them do not end, whatever the end-of-sequence ids.
    let keep = 2.max(1 + eos.len()) * beams;
    let mut searches: Vec<BeamSearch> = (0..batch)
        .map(|_| BeamSearch::new(beams, search.special.decoder_start, config))
        .collect();
    let max_len = 1 + config.max_new_tokens;
    let mut all_scores = Vec::new();
    for cur_len in 1..max_len {
        let running: Vec<Vec<u32>> = searches
            .iter()
            .flat_map(|s| s.running.iter().map(|b| b.tokens.clone()))
            .collect();
        let last: Vec<u32> = running.iter().map(|t| t[t.len() - 1]).collect();
        let logits = search.logits(&last, cur_len - 1, &mut state)?;
        let context = search.context(&running, &encoder_ids, cur_len - 1);
        let log_probs = search
            .processors
            .process(&context, log_softmax(logits, 1))?;
        if config.output_scores {
            all_scores.push(log_probs.clone());
        }
        let beam_scores: Vec<f32> = searches
            .iter()
            .flat_map(|s| s.running.iter().map(|b| b.score))
            .collect();
        let rows = beam_scores.len();
        let beam_scores =
            search
                .traffic
                .float_tensor::<B, 2>(beam_scores, [rows, 1], &search.device);
        let accumulated = log_probs
            .add(per_row(beam_scores, vocab))
            .reshape([batch, beams * vocab]);
        let candidates = top_candidates(accumulated, keep, &search.traffic)?;
        let timed_out = search.out_of_time();
        let ends = |sequence: &[u32]| {
            let last = sequence[sequence.len() - 1];
            eos.contains(&last) || timed_out || search.stops(sequence)
        };
        let mut reorder = Vec::with_capacity(batch * beams);
        for (b, beam_search) in searches.iter_mut().enumerate() {
            let chosen = beam_search.step(&candidates[b], vocab, cur_len, max_len, &ends);
            reorder.extend(chosen.into_iter().map(|beam| (b * beams + beam) as i64));
        }
        if searches.iter().all(|s| s.done) {
            break;
        }
        let count = reorder.len();
        let reorder = search
            .traffic
            .int_tensor::<B, 1>(reorder, [count], &search.device);
        state = search.model.reorder(state, reorder);
    }
    let returned = config.num_return_sequences;
    let mut sequences = Vec::with_capacity(batch * returned);
    let mut sequences_scores = Vec::with_capacity(batch * returned);
    for beam_search in searches {
        for beam in beam_search.best(returned) {
            sequences.push(beam.tokens);
            sequences_scores.push(beam.score);
        }
    }
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(1);
    for tokens in &mut sequences {
        tokens.resize(longest, fill);
    }
    Ok(GenerateOutput {
        sequences,
        scores: all_scores,
        sequences_scores,
        traffic: search.traffic,
    })
}

#[derive(Debug, Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

/// The beam search of one prompt.
struct BeamSearch {
    running: Vec<Beam>,
    finished: Vec<(Beam, bool)>,
    heuristic_unsatisfied: bool,
    done: bool,
    beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
}

const NEG: f32 = -1.0e9;

impl BeamSearch {
    fn new(beams: usize, start: u32, config: &GenerationConfig) -> Self {
        let running = (0..beams)
            .map(|i| Beam {
                tokens: vec![start],
                score: if i == 0 { 0.0 } else { NEG },
            })
            .collect();
        let finished = (0..beams)
            .map(|_| {
                (
                    Beam {
                        tokens: vec![start],
                        score: NEG,
                    },
                    false,
                )
            })
            .collect();
        Self {
            running,
            finished,
            heuristic_unsatisfied: true,
            done: false,
            beams,
            length_penalty: config.length_penalty,
            early_stopping: config.early_stopping,
        }
    }

    /// One step with this prompt's best candidates over `beams × vocab` (largest first, ties
    /// in index order, as `torch.topk` gives them); `ends` tells whether a candidate sequence
    /// is finished. Returns, for each new running beam, the index of the beam it continues.
    fn step(
        &mut self,
        candidates: &[Candidate],
        vocab: usize,
        cur_len: usize,
        max_len: usize,
        ends: &dyn Fn(&[u32]) -> bool,
    ) -> Vec<usize> {
        let candidates: Vec<(f32, usize, u32)> = candidates
            .iter()
            .map(|c| (c.value, c.index / vocab, (c.index % vocab) as u32))
            .collect();
        let sequences: Vec<Vec<u32>> = candidates
            .iter()
            .map(|(_, beam, token)| {
                let mut tokens = self.running[*beam].tokens.clone();
                tokens.push(*token);
                tokens
            })
            .collect();
        let hits: Vec<bool> = sequences
            .iter()
            .map(|s| ends(s) || cur_len + 1 >= max_len)
            .collect();

        // Next running beams: the best candidates that did not stop.
        let mut next: Vec<(f32, usize, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(k, (score, beam, _))| (if hits[k] { score + NEG } else { *score }, *beam, k))
            .collect();
        next.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        next.truncate(self.beams);
        let new_running: Vec<Beam> = next
            .iter()
            .map(|(score, _, k)| Beam {
                tokens: sequences[*k].clone(),
                score: *score,
            })
            .collect();

        // Finished hypotheses: merge the new ones (top `beams` candidates that stopped).
        // transformers divides by (generated length including the new token)^length_penalty.
        let penalty = (cur_len as f32).powf(self.length_penalty);
        let all_full = self.finished.iter().all(|(_, f)| *f)
            && self.early_stopping == EarlyStopping::Immediate;
        let mut merged: Vec<(f32, Beam, bool)> = self
            .finished
            .iter()
            .map(|(beam, f)| (beam.score, beam.clone(), *f))
            .collect();
        for (k, (score, _, _)) in candidates.iter().enumerate() {
            let just_finished = hits[k] && k < self.beams;
            let mut value = score / penalty;
            if all_full {
                value += NEG;
            }
            if !self.heuristic_unsatisfied {
                value += NEG;
            }
            if !just_finished {
                value += NEG;
            }
            merged.push((
                value,
                Beam {
                    tokens: sequences[k].clone(),
                    score: value,
                },
                just_finished,
            ));
        }
        let mut order: Vec<usize> = (0..merged.len()).collect();
        order.sort_by(|a, b| merged[*b].0.total_cmp(&merged[*a].0).then(a.cmp(b)));
        self.finished = order[..self.beams]
            .iter()
            .map(|i| (merged[*i].1.clone(), merged[*i].2))
            .collect();

        let chosen = next.iter().map(|(_, beam, _)| *beam).collect();
        self.running = new_running;

        // Stopping rules, after the length grows by one.
        let cur_len = cur_len + 1;
        let hypothetical =
            if self.early_stopping == EarlyStopping::Never && self.length_penalty > 0.0 {
                max_len - 1
            } else {
                cur_len - 1
            };
        let best_running = self.running[0].score / (hypothetical as f32).powf(self.length_penalty);
        let worst_finished = self
            .finished
            .iter()
            .map(|(b, _)| b.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = self
            .finished
            .iter()
            .any(|(_, f)| best_running > if *f { worst_finished } else { NEG });
        self.heuristic_unsatisfied &= improvable;
        let all_finished = self.finished.iter().all(|(_, f)| *f);
        let full = all_finished && self.early_stopping == EarlyStopping::Immediate;
        // Once done, nothing can enter this prompt's finished hypotheses any more.
        self.done = !self.heuristic_unsatisfied || full || hits.iter().all(|h| *h);
        chosen
    }

    /// The `n` best finished hypotheses, best first.
    fn best(self, n: usize) -> Vec<Beam> {
        self.finished
            .into_iter()
            .take(n)
            .map(|(beam, _)| beam)
            .collect()
    }
}
