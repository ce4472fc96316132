//! Tests of the token estimator: surfaces, overheads, caps, hostile input, calibration.

use super::*;
use TokenCounting::{Cl100kBase, O200kBase};

fn raw(json: &str) -> &RawValue {
    serde_json::from_str(json).unwrap()
}

fn estimator(counting: TokenCounting) -> Estimator {
    Estimator::new(&counting).unwrap()
}

/// One token per character: the arithmetic of shapes and overheads shows plainly.
fn unit() -> Estimator {
    estimator(TokenCounting::Chars {
        chars_per_token: 1.0,
    })
}

const MESSAGE: u64 = TOKENS_PER_MESSAGE + 1; // with its role

#[test]
fn each_surface_counts_its_shapes_and_overheads() {
    let payload = "A".repeat(10_000);
    let parts = format!(
        r#"[{{"role":"user","content":[{{"type":"text","text":"ab"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{payload}"}}}},{{"type":"image_url","image_url":{{"detail":"low","url":"x"}}}},{{"type":"image_url","image_url":"https://x/y.png"}},{{"type":"input_audio","input_audio":{{"data":"{payload}"}}}},{{"type":"file","file":{{"file_data":"{payload}"}}}},{{"type":"refusal","refusal":"no"}}]}}]"#
    );
    let images = 2 * IMAGE_TOKENS + IMAGE_LOW_TOKENS + 2 * OPAQUE_PART_TOKENS;
    let reply = REPLY_PRIMING_TOKENS;
    let cases: [(Operation, &str, u64); 13] = [
        (
            Operation::Chat,
            r#"[{"role":"user","content":"abcd"}]"#,
            4 + MESSAGE + reply,
        ),
        (
            Operation::Chat,
            r#"[{"role":"system","content":"ab"},{"role":"user","name":"x","content":"c"}]"#,
            3 + 1 + TOKENS_PER_NAME + 2 * MESSAGE + reply,
        ),
        (Operation::Chat, "[]", reply),
        // Tool calls and tool results are text: ids, names, arguments.
        (
            Operation::Chat,
            r#"[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}]"#,
            (2 + 8 + 1 + 2) + (2 + 2) + 2 * MESSAGE + reply,
        ),
        // Parts: text and refusals are text, payloads are never read.
        (Operation::Chat, &parts, 2 + 2 + images + MESSAGE + reply),
        (Operation::TextCompletion, r#""abcd""#, 4),
        (Operation::TextCompletion, r#"["ab","cd"]"#, 4),
        (Operation::TextCompletion, "[1,2,3]", 3),
        (Operation::TextCompletion, "[[1,2],[3]]", 3),
        (Operation::Embeddings, r#"["ab","cd"]"#, 4),
        (Operation::Embeddings, "[[1,2],[3]]", 3),
        // Escapes count as the text they stand for.
        (Operation::Embeddings, r#""\u00e9\n""#, 2),
        (Operation::Embeddings, "{}", 0),
    ];
    let e = unit();
    for (op, json, want) in cases {
        assert_eq!(e.input_tokens(op, Some(raw(json)), None), want, "{json}");
    }
    assert_eq!(e.input_tokens(Operation::Chat, None, None), reply);
    let tools = r#"[{"type":"function","function":{"name":"f"}}]"#;
    let with_tools = e.input_tokens(Operation::Chat, Some(raw("[]")), Some(raw(tools)));
    assert_eq!(
        with_tools,
        tools.len() as u64 + reply,
        "tools count as raw JSON"
    );
}

#[test]
fn the_tokenizer_counts_exactly_within_its_budget_and_extrapolates_past_it() {
    let o200k = estimator(O200kBase);
    // "Hello world" is two o200k tokens, "user" one.
    let hello = r#"[{"role":"user","content":"Hello world"}]"#;
    let counted = o200k.input_tokens(Operation::Chat, Some(raw(hello)), None);
    assert_eq!(counted, 2 + MESSAGE + REPLY_PRIMING_TOKENS);
    let long = ENGLISH.repeat(1 + 4 * TOKENIZER_BUDGET_BYTES / ENGLISH.len());
    let exact = O200K_BASE.as_ref().unwrap().encode_ordinary(&long).len() as f64;
    let estimate = o200k.text_tokens(&long) as f64;
    assert!(
        (estimate / exact - 1.0).abs() < 0.02,
        "{estimate} vs {exact}"
    );
    assert!(estimator(Cl100kBase).text_tokens(CHINESE) > o200k.text_tokens(CHINESE));
    fn shared<T: Send + Sync + Copy + 'static>() {}
    shared::<Estimator>();
}

#[test]
fn output_reservation_is_the_request_capped() {
    assert_eq!(output_reservation(Some(100), 4096), 100);
    assert_eq!(output_reservation(Some(100_000), 4096), 4096);
    assert_eq!(output_reservation(None, 4096), 4096);
    assert_eq!(output_reservation(Some(0), 4096), 0);
}

#[test]
fn config_shapes() {
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Route {
        token_counting: TokenCounting,
    }
    let parse = |yaml: &str| {
        serde_norway::from_str::<Route>(&format!("token_counting: {yaml}"))
            .map(|r| r.token_counting)
    };
    let chars = |chars_per_token| TokenCounting::Chars { chars_per_token };
    for (yaml, want) in [
        ("o200k_base", O200kBase),
        ("cl100k_base", Cl100kBase),
        ("auto", TokenCounting::Auto),
        ("chars", chars(4.0)),
        ("{method: chars, chars_per_token: 3}", chars(3.0)),
        ("{method: o200k_base}", O200kBase),
    ] {
        assert_eq!(parse(yaml).unwrap(), want, "{yaml}");
    }
    for bad in [
        "o200k",
        "{method: o200k_base, chars_per_token: 3}",
        "{method: chars, chars_per_token: 0}",
        "{method: chars, chars_per_token: .nan}",
        "{method: chars, ratio: 3}",
        "{chars_per_token: 3}",
        "4",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert!(Estimator::new(&chars(100.0)).is_err());
    assert_eq!(TokenCounting::default(), chars(DEFAULT_CHARS_PER_TOKEN));
}

#[test]
fn auto_follows_the_model_family() {
    let rule = TokenCounting::default();
    for (model, want) in [
        ("gpt-4o-mini", O200kBase),
        ("openai/gpt-4.1", O200kBase),
        ("ft:gpt-4o-mini:org:x:1", O200kBase),
        ("o3-mini", O200kBase),
        ("gpt-oss-120b", O200kBase),
        ("gpt-4", Cl100kBase),
        ("text-embedding-3-small", Cl100kBase),
        ("gemini-2.5-pro", rule.clone()),
        ("llama-3.1-8b", rule),
    ] {
        assert_eq!(TokenCounting::Auto.resolve(model), want, "{model}");
    }
    assert_eq!(Cl100kBase.resolve("gpt-4o"), Cl100kBase);
}

/// Random JSON of every shape, with the keys the walk tells apart, never panics; nesting
/// past the parser's limit is counted as raw text.
#[test]
fn any_json_gives_an_estimate() {
    fn value(rng: &mut fastrand::Rng, depth: u32) -> serde_json::Value {
        use serde_json::{Value, json};
        let keys = "role content name text refusal image_url input_audio detail file url x";
        let keys: Vec<&str> = keys.split(' ').collect();
        let items = |rng: &mut fastrand::Rng| -> Vec<Value> {
            (0..rng.usize(0..5))
                .map(|_| value(rng, depth + 1))
                .collect()
        };
        match rng.u32(0..if depth > 6 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            2 => json!(rng.i64(..)),
            3 => json!(rng.f64() * 1e300),
            4 => Value::String((0..rng.usize(0..40)).map(|_| rng.char(..)).collect()),
            5 => ["low", "high", "user", "text", ""][rng.usize(0..5)].into(),
            6 => items(rng).into(),
            _ => (items(rng).into_iter())
                .map(|v| (keys[rng.usize(0..keys.len())].to_string(), v))
                .collect(),
        }
    }
    let mut rng = fastrand::Rng::with_seed(8);
    let estimators = [
        unit(),
        estimator(O200kBase),
        estimator(TokenCounting::default()),
    ];
    for _ in 0..3000 {
        let json = value(&mut rng, 0).to_string();
        for (e, op) in estimators
            .iter()
            .flat_map(|e| Operation::ALL.map(|op| (e, op)))
        {
            e.input_tokens(op, Some(raw(&json)), Some(raw(&json)));
        }
    }
    let deep = format!("{}\"abcd\"{}", "[".repeat(10_000), "]".repeat(10_000));
    let as_text = unit().text_tokens(&deep);
    assert_eq!(
        unit().input_tokens(Operation::Embeddings, Some(raw(&deep)), None),
        as_text
    );
    assert!(estimators[1].input_tokens(Operation::Chat, Some(raw(&deep)), None) > 0);
}

const ENGLISH: &str = "The committee met on Thursday to review the proposal for a new \
    footbridge across the river. Several residents argued that the existing crossing, \
    built in 1962, was too narrow for cyclists and pushchairs, while others worried about \
    the cost and the months of disruption. After a long discussion, the members agreed \
    to commission an independent survey before making any decision, and asked the \
    engineers to report back by the end of the autumn. ";
const ENGLISH_2: &str = "Thanks for getting in touch! I've looked into your account and \
    it seems the payment didn't go through because the card on file expired last month. \
    Could you update your billing details from the settings page? Once that's done, I'll \
    re-run the charge manually and your subscription should be active again within a few \
    minutes. Let me know if anything is still unclear.";
const ENGLISH_3: &str = "You are a helpful assistant for Acme Corp.\n\nRules:\n1. Answer in \
    at most 3 sentences.\n2. If the user asks about prices, quote the table below (USD, ex. \
    VAT).\n3. Never make up order numbers; ask for them.\n\n| Plan | Monthly | Yearly |\n|---|\
    ---|---|\n| Basic | $9 | $90 |\n| Pro | $29 | $290 |\n\nUser: hi, what's the pro plan \
    per year? and can I pay by invoice? we're a small team of 4 so not sure which fits";
const CODE: &str = "fn parse_config(path: &Path) -> Result<Config, Error> {\n    let text = \
    std::fs::read_to_string(path)?;\n    let mut config: Config = serde_yaml::from_str(&text)?;\n    \
    for route in config.routes.iter_mut() {\n        if route.weight == 0 {\n            \
    route.weight = 1;\n        }\n    }\n    Ok(config)\n}\n";
const CHINESE: &str = "委员会周四开会审议在河上修建一座新人行桥的提案。几位居民认为，建于一九六二年的现有\
    通道对骑自行车的人和推婴儿车的人来说太窄，而另一些人则担心费用和长达数月的施工干扰。经过长时间的讨论，\
    委员们同意在做出任何决定之前委托进行一项独立调查，并要求工程师在秋季结束前提交报告。";
const RUSSIAN: &str = "Комитет собрался в четверг, чтобы рассмотреть предложение о строительстве \
    нового пешеходного моста через реку. Несколько жителей утверждали, что существующая \
    переправа, построенная в 1962 году, слишком узка для велосипедистов и колясок, тогда \
    как другие беспокоились о стоимости и многомесячных неудобствах.";

/// The chars rule against o200k_base and cl100k_base: estimate / true count. English
/// varies with style (flowing prose about 5.2 chars per o200k token, a markdown system
/// prompt 3.4): 4 is the middle, within 35% of every English sample and 15% of their sum.
/// Code and Russian come out near 1 on o200k (Russian 0.55 on cl100k); Chinese is
/// under-counted about threefold. `--nocapture` prints the figures.
#[test]
fn the_chars_rule_is_calibrated_for_english_prose() {
    let (rule, o200k) = (estimator(TokenCounting::default()), estimator(O200kBase));
    let cl100k = estimator(Cl100kBase);
    let ratio =
        |e: &Estimator, text: &str| rule.text_tokens(text) as f64 / e.text_tokens(text) as f64;
    let english = [ENGLISH, ENGLISH_2, ENGLISH_3];
    let others = [("code", CODE), ("chinese", CHINESE), ("russian", RUSSIAN)];
    for (name, text) in english.map(|t| ("english", t)).into_iter().chain(others) {
        let chars = text.chars().count() as f64;
        eprintln!(
            "{name}: {chars} chars, {:.2} chars/o200k token, rule/o200k {:.2}, rule/cl100k {:.2}",
            chars / o200k.text_tokens(text) as f64,
            ratio(&o200k, text),
            ratio(&cl100k, text),
        );
    }
    let all = english.concat();
    for e in [&o200k, &cl100k] {
        for (text, within) in english
            .map(|t| (t, 0.35))
            .into_iter()
            .chain([(&*all, 0.15)])
        {
            assert!(
                (ratio(e, text) - 1.0).abs() < within,
                "{e:?}: {}",
                ratio(e, text)
            );
        }
    }
    assert!(ratio(&o200k, CHINESE) < 0.4, "{}", ratio(&o200k, CHINESE));
}
