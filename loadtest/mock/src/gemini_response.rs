//! What a Gemini answer says, and its `GenerateContentResponse` JSON: whole (unary) or as the
//! events of a stream, where each event carries the cumulative `usageMetadata` so far.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::responses::{self, word};

/// Text of the thought-summary part (sent only when the request sets `includeThoughts`).
pub(crate) const THOUGHT_SUMMARY: &str =
    "**Weighing the request** The mock thinks briefly before it answers.";

/// What the answer consists of.
#[derive(Debug)]
pub(crate) enum AnswerKind {
    /// A blocked prompt: `promptFeedback.blockReason` and no candidates.
    Blocked(&'static str),
    /// `tokens` tokens of text per candidate.
    Text { tokens: usize },
    /// `functionCall` objects (`{"name","args"}`), one part (and one stream event) each.
    Calls(Vec<Box<RawValue>>),
}

/// A complete answer, fixed when the request is handled.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) kind: AnswerKind,
    pub(crate) finish_reason: &'static str,
    pub(crate) candidates: usize,
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: Option<u64>,
    pub(crate) thoughts_tokens: u64,
    pub(crate) include_thoughts: bool,
    pub(crate) tokens_per_event: usize,
    pub(crate) model_version: String,
    pub(crate) response_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseJson<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    candidates: Vec<CandidateJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_feedback: Option<FeedbackJson>,
    usage_metadata: UsageJson,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<ContentJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<[SafetyRating; 1]>,
    index: usize,
}

#[derive(Serialize)]
struct ContentJson<'a> {
    role: &'static str,
    parts: Vec<PartJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PartJson<'a> {
    Text {
        text: String,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        thought: bool,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: &'a RawValue,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FeedbackJson {
    block_reason: &'static str,
    block_reason_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<[SafetyRating; 1]>,
}

#[derive(Serialize)]
struct SafetyRating {
    category: &'static str,
    probability: &'static str,
    blocked: bool,
}

const BLOCKING_RATING: [SafetyRating; 1] = [SafetyRating {
    category: "HARM_CATEGORY_DANGEROUS_CONTENT",
    probability: "HIGH",
    blocked: true,
}];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson {
    prompt_token_count: u64,
    // proto3 JSON leaves zero counts out, and so does Vertex.
    #[serde(skip_serializing_if = "is_zero")]
    candidates_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    prompt_tokens_details: [ModalityCount; 1],
    traffic_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Text of tokens `range` of candidate `candidate`; candidate 0 is the OpenAI surface's text,
/// the others start further along the word list so candidates differ.
fn candidate_text(candidate: usize, range: std::ops::Range<usize>) -> String {
    let mut text = String::with_capacity(range.len() * 8);
    for i in range {
        text.push_str(word(candidate + i));
        text.push(' ');
    }
    text
}

/// Whether the finish reason withholds the candidate's content (as Vertex does for SAFETY,
/// RECITATION and the like): the candidate then carries no `content`.
fn withholds(finish_reason: &str) -> bool {
    !matches!(finish_reason, "STOP" | "MAX_TOKENS")
}

/// Tokens charged for one function call.
fn call_tokens(call: &RawValue) -> u64 {
    responses::prompt_tokens(call.get().len())
}

impl Answer {
    fn thinks(&self) -> bool {
        self.thoughts_tokens > 0
    }

    /// A leading event (and part) with the thought summary.
    fn thought_event(&self) -> bool {
        self.thinks() && self.include_thoughts && !matches!(self.kind, AnswerKind::Blocked(_))
    }

    fn text_events(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.tokens_per_event.max(1)).max(1)
    }

    /// Events of an unfaulted stream.
    pub(crate) fn event_count(&self) -> usize {
        let lead = usize::from(self.thought_event());
        let body = match &self.kind {
            AnswerKind::Blocked(_) => 1,
            AnswerKind::Text { tokens } => {
                self.text_events(*tokens) + usize::from(withholds(self.finish_reason))
            }
            AnswerKind::Calls(calls) => calls.len().max(1),
        };
        lead + body
    }

    /// Output tokens that event `i` carries (paces the stream).
    pub(crate) fn event_tokens(&self, i: usize) -> usize {
        let Some(i) = i.checked_sub(usize::from(self.thought_event())) else {
            return 1;
        };
        match &self.kind {
            AnswerKind::Text { tokens } if i < self.text_events(*tokens) => {
                let start = i * self.tokens_per_event.max(1);
                (start + self.tokens_per_event.max(1)).min(*tokens) - start.min(*tokens)
            }
            _ => 1,
        }
    }

    fn usage(&self, candidates_tokens: u64) -> UsageJson {
        UsageJson {
            prompt_token_count: self.prompt_tokens,
            candidates_token_count: candidates_tokens,
            thoughts_token_count: self.thoughts_tokens,
            total_token_count: self.prompt_tokens + candidates_tokens + self.thoughts_tokens,
            cached_content_token_count: self.cached_tokens,
            prompt_tokens_details: [ModalityCount {
                modality: "TEXT",
                token_count: self.prompt_tokens,
            }],
            traffic_type: "ON_DEMAND",
        }
    }

    fn blocked_json(&self, reason: &'static str) -> String {
        self.render(
            Vec::new(),
            Some(FeedbackJson {
                block_reason: reason,
                block_reason_message: format!(
                    "The prompt was blocked for {reason} (tollgate-mock)."
                ),
                safety_ratings: (reason == "SAFETY").then_some(BLOCKING_RATING),
            }),
            0,
        )
    }

    fn render(
        &self,
        candidates: Vec<CandidateJson<'_>>,
        feedback: Option<FeedbackJson>,
        candidates_tokens: u64,
    ) -> String {
        let response = ResponseJson {
            candidates,
            prompt_feedback: feedback,
            usage_metadata: self.usage(candidates_tokens),
            model_version: &self.model_version,
            response_id: &self.response_id,
        };
        // Strings, integers and raw JSON always serialize.
        serde_json::to_string(&response).unwrap_or_default()
    }

    /// One candidate per requested candidate, each with `parts(candidate)` (no content when
    /// `parts` is empty) and the finish reason when `finish` is set.
    fn candidates<'a>(
        &self,
        finish: bool,
        parts: impl Fn(usize) -> Vec<PartJson<'a>>,
    ) -> Vec<CandidateJson<'a>> {
        let blocking = finish && matches!(self.finish_reason, "SAFETY" | "IMAGE_SAFETY");
        (0..self.candidates)
            .map(|index| {
                let parts = parts(index);
                CandidateJson {
                    content: (!parts.is_empty()).then_some(ContentJson {
                        role: "model",
                        parts,
                    }),
                    finish_reason: finish.then_some(self.finish_reason),
                    safety_ratings: blocking.then_some(BLOCKING_RATING),
                    index,
                }
            })
            .collect()
    }

    fn thought_part<'a>() -> PartJson<'a> {
        PartJson::Text {
            text: THOUGHT_SUMMARY.to_owned(),
            thought: true,
        }
    }

    /// Output tokens of the whole answer, over all candidates.
    fn output_tokens(&self) -> u64 {
        let per_candidate = match &self.kind {
            AnswerKind::Blocked(_) => 0,
            AnswerKind::Text { tokens } => *tokens as u64,
            AnswerKind::Calls(calls) => calls.iter().map(|c| call_tokens(c)).sum(),
        };
        per_candidate * self.candidates as u64
    }

    /// The unary `generateContent` body.
    pub(crate) fn unary_json(&self) -> String {
        let withheld = withholds(self.finish_reason);
        let lead = self.thought_event();
        let candidates = match &self.kind {
            AnswerKind::Blocked(reason) => return self.blocked_json(reason),
            AnswerKind::Text { tokens } => self.candidates(true, |c| {
                let mut parts: Vec<PartJson<'_>> =
                    lead.then(Self::thought_part).into_iter().collect();
                if !withheld {
                    parts.push(PartJson::Text {
                        text: candidate_text(c, 0..*tokens),
                        thought: false,
                    });
                }
                parts
            }),
            AnswerKind::Calls(calls) => self.candidates(true, |_| {
                let mut parts: Vec<PartJson<'_>> =
                    lead.then(Self::thought_part).into_iter().collect();
                if !withheld {
                    parts.extend(calls.iter().map(|c| PartJson::Call { function_call: c }));
                }
                parts
            }),
        };
        let output = if withheld { 0 } else { self.output_tokens() };
        self.render(candidates, None, output)
    }

    /// Event `i` of the stream (`i < event_count()`).
    pub(crate) fn event_json(&self, i: usize) -> String {
        let lead = usize::from(self.thought_event());
        let last = self.event_count() - 1;
        if i < lead {
            let candidates = self.candidates(false, |_| vec![Self::thought_part()]);
            return self.render(candidates, None, 0);
        }
        let j = i - lead;
        let candidates = self.candidates as u64;
        match &self.kind {
            AnswerKind::Blocked(reason) => self.blocked_json(reason),
            AnswerKind::Text { tokens } => {
                let per = self.tokens_per_event.max(1);
                if j >= self.text_events(*tokens) {
                    // The closing event of a withheld answer: finish reason, no content.
                    let finals = self.candidates(true, |_| Vec::new());
                    return self.render(finals, None, *tokens as u64 * candidates);
                }
                let range = (j * per).min(*tokens)..((j + 1) * per).min(*tokens);
                let end = range.end as u64;
                let finals = self.candidates(i == last, |c| {
                    vec![PartJson::Text {
                        text: candidate_text(c, range.clone()),
                        thought: false,
                    }]
                });
                self.render(finals, None, end * candidates)
            }
            AnswerKind::Calls(calls) => {
                let withheld = withholds(self.finish_reason);
                let so_far: u64 = calls.iter().take(j + 1).map(|c| call_tokens(c)).sum();
                let finals = self.candidates(i == last, |_| match calls.get(j) {
                    Some(call) if !withheld => vec![PartJson::Call {
                        function_call: call,
                    }],
                    _ => Vec::new(),
                });
                let output = if withheld { 0 } else { so_far * candidates };
                self.render(finals, None, output)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: AnswerKind, finish: &'static str) -> Answer {
        Answer {
            kind,
            finish_reason: finish,
            candidates: 1,
            prompt_tokens: 10,
            cached_tokens: None,
            thoughts_tokens: 0,
            include_thoughts: false,
            tokens_per_event: 4,
            model_version: "gemini-x-001".into(),
            response_id: "r1".into(),
        }
    }

    fn v(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn unary_text_shape() {
        let mut a = answer(AnswerKind::Text { tokens: 3 }, "STOP");
        a.candidates = 2;
        a.cached_tokens = Some(4);
        let body = v(&a.unary_json());
        assert_eq!(body["candidates"][0]["content"]["role"], "model");
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["text"],
            "the mock model "
        );
        assert_eq!(
            body["candidates"][1]["content"]["parts"][0]["text"],
            "mock model streams "
        );
        assert_eq!(body["candidates"][1]["index"], 1);
        assert_eq!(body["candidates"][0]["finishReason"], "STOP");
        let usage = &body["usageMetadata"];
        assert_eq!(usage["candidatesTokenCount"], 6);
        assert_eq!(usage["totalTokenCount"], 16);
        assert_eq!(usage["cachedContentTokenCount"], 4);
        assert!(usage.get("thoughtsTokenCount").is_none());
        assert_eq!(body["modelVersion"], "gemini-x-001");
        assert_eq!(body["responseId"], "r1");
    }

    #[test]
    fn stream_usage_is_cumulative() {
        let mut a = answer(AnswerKind::Text { tokens: 10 }, "MAX_TOKENS");
        a.thoughts_tokens = 5;
        a.include_thoughts = true;
        assert_eq!(a.event_count(), 1 + 3);
        assert_eq!(
            (0..4).map(|i| a.event_tokens(i)).collect::<Vec<_>>(),
            [1, 4, 4, 2]
        );
        let thought = v(&a.event_json(0));
        assert_eq!(
            thought["candidates"][0]["content"]["parts"][0]["thought"],
            true
        );
        assert_eq!(thought["usageMetadata"]["thoughtsTokenCount"], 5);
        let counts: Vec<_> = (1..4)
            .map(|i| v(&a.event_json(i))["usageMetadata"]["candidatesTokenCount"].clone())
            .collect();
        assert_eq!(counts, [4, 8, 10]);
        let last = v(&a.event_json(3));
        assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 10 + 10 + 5);
        assert!(
            v(&a.event_json(1))["candidates"][0]
                .get("finishReason")
                .is_none()
        );
    }

    #[test]
    fn withheld_and_blocked_answers() {
        let safety = answer(AnswerKind::Text { tokens: 2 }, "SAFETY");
        let body = v(&safety.unary_json());
        assert!(body["candidates"][0].get("content").is_none());
        assert_eq!(body["candidates"][0]["safetyRatings"][0]["blocked"], true);
        assert_eq!(safety.event_count(), 2);
        let last = v(&safety.event_json(1));
        assert!(last["candidates"][0].get("content").is_none());
        assert_eq!(last["candidates"][0]["finishReason"], "SAFETY");

        let blocked = answer(AnswerKind::Blocked("PROHIBITED_CONTENT"), "STOP");
        let body = v(&blocked.unary_json());
        assert!(body.get("candidates").is_none());
        assert_eq!(body["promptFeedback"]["blockReason"], "PROHIBITED_CONTENT");
        assert!(body["promptFeedback"]["blockReasonMessage"].is_string());
        assert_eq!(body["usageMetadata"]["totalTokenCount"], 10);
        assert_eq!(blocked.event_count(), 1);
        assert_eq!(v(&blocked.event_json(0)), body);
    }

    #[test]
    fn calls_one_per_event() {
        let calls = vec![
            RawValue::from_string(r#"{"name":"a","args":{}}"#.into()).unwrap(),
            RawValue::from_string(r#"{"name":"b","args":{"x":1}}"#.into()).unwrap(),
        ];
        let a = answer(AnswerKind::Calls(calls), "STOP");
        let body = v(&a.unary_json());
        assert_eq!(
            body["candidates"][0]["content"]["parts"][1]["functionCall"]["name"],
            "b"
        );
        assert_eq!(a.event_count(), 2);
        let first = v(&a.event_json(0));
        assert_eq!(
            first["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "a"
        );
        assert!(first["candidates"][0].get("finishReason").is_none());
        let second = v(&a.event_json(1));
        assert_eq!(second["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            second["usageMetadata"]["candidatesTokenCount"],
            body["usageMetadata"]["candidatesTokenCount"]
        );
    }

    #[test]
    fn zero_tokens_still_finish() {
        let a = answer(AnswerKind::Text { tokens: 0 }, "STOP");
        assert_eq!(a.event_count(), 1);
        let only = v(&a.event_json(0));
        assert_eq!(only["candidates"][0]["finishReason"], "STOP");
        assert_eq!(only["candidates"][0]["content"]["parts"][0]["text"], "");
    }
}
