//! Spans over OTLP to a real receiver (the official `opentelemetry-proto` definitions on
//! gRPC and HTTP/protobuf): the span tree and its attributes, W3C trace context across the
//! upstream hop, sampling, content opt-in. `trace_export.rs` covers collectors that are
//! slow, absent or failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::otlp::*;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn spans_reach_a_real_receiver_over_grpc_and_http_with_genai_attributes() {
    for protocol in ["grpc", "http/protobuf"] {
        let Some(receiver) = Receiver::start(&[]) else {
            return;
        };
        let endpoint = if protocol == "grpc" {
            &receiver.grpc
        } else {
            &receiver.http
        };
        let (upstream, gw) = traced_gateway(
            &tracing_section(endpoint, protocol, ""),
            "    upstream_model: served-model\n",
        )
        .await;
        let parent = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
        let body = r#"{"model":"m","stream":true,"temperature":0.5,"max_tokens":64,"messages":[{"role":"user","content":"secret prompt"}]}"#;
        chat_ok(
            &gw,
            body,
            &[("traceparent", &parent), ("tracestate", INBOUND_STATE)],
        )
        .await;

        let spans = receiver.spans_of(INBOUND_TRACE, 4);
        let server = by_name(&spans, "POST /v1/chat/completions");
        let auth = by_name(&spans, "tollgate.auth");
        let route = by_name(&spans, "tollgate.route");
        let client = by_name(&spans, "chat served-model");
        assert_eq!(
            server["protocol"],
            if protocol == "grpc" { "grpc" } else { "http" }
        );
        assert_eq!(server["resource"]["service.name"], "tollgate");
        assert_eq!(server["kind"], "SERVER");
        assert_eq!(server["parent_span_id"], INBOUND_PARENT);
        assert_eq!(server["trace_state"], INBOUND_STATE);
        assert_eq!(
            server["flags"].as_u64().unwrap() & 0x301,
            0x301,
            "sampled, remote parent"
        );
        let sa = &server["attributes"];
        assert_eq!(sa["http.request.method"], "POST");
        assert_eq!(sa["http.route"], "/v1/chat/completions");
        assert_eq!(sa["http.response.status_code"], 200);
        assert_eq!(sa["tollgate.route"], "m");
        assert_eq!(sa["tollgate.route.version"], "default");
        assert_eq!(sa["tollgate.tenant"], "anonymous");
        assert_eq!(
            sa["tollgate.config.version"].as_str().unwrap(),
            &*gw.shared.live.load().version
        );
        for child in [auth, route, client] {
            assert_eq!(child["parent_span_id"], server["span_id"], "{child}");
            assert_eq!(child["trace_state"], INBOUND_STATE);
        }
        assert_eq!(auth["kind"], "INTERNAL");
        assert_eq!(route["kind"], "INTERNAL");
        assert_eq!(route["attributes"]["tollgate.route.pinned"], false);
        assert_eq!(client["kind"], "CLIENT");
        let start = |s: &Value| s["start_ns"].as_u64().unwrap();
        let end = |s: &Value| s["end_ns"].as_u64().unwrap();
        assert!(start(server) <= start(auth) && end(auth) <= start(route));
        assert!(end(route) <= start(client) && end(client) <= end(server));

        let ca = &client["attributes"];
        assert_eq!(ca["gen_ai.operation.name"], "chat");
        assert_eq!(ca["gen_ai.provider.name"], "self_hosted");
        assert_eq!(ca["gen_ai.request.model"], "served-model");
        assert_eq!(ca["gen_ai.request.temperature"], 0.5);
        assert_eq!(ca["gen_ai.request.max_tokens"], 64);
        assert_eq!(ca["gen_ai.request.stream"], true);
        assert_eq!(ca["gen_ai.response.model"], "served-model");
        assert!(
            ca["gen_ai.response.id"]
                .as_str()
                .unwrap()
                .starts_with("chatcmpl")
        );
        assert_eq!(
            ca["gen_ai.response.finish_reasons"],
            serde_json::json!(["stop"])
        );
        assert_eq!(ca["gen_ai.usage.output_tokens"], 3);
        assert!(ca["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0);
        assert!(ca["gen_ai.response.time_to_first_chunk"].as_f64().unwrap() > 0.0);
        assert_eq!(ca["server.address"], "127.0.0.1");
        assert_eq!(ca["server.port"], i64::from(upstream.addr().port()));
        assert_eq!(ca["http.response.status_code"], 200);
        assert_eq!(ca["tollgate.attempt"], 1);
        assert_eq!(ca["tollgate.provider"], "mock");
        assert!(ca.get("error.type").is_none());
        // Content is not recorded unless the route opts in.
        assert!(ca.get("gen_ai.input.messages").is_none());
        assert!(ca.get("gen_ai.output.messages").is_none());
        assert!(
            !serde_json::to_string(&spans)
                .unwrap()
                .contains("secret prompt")
        );

        // Across the hop: the upstream saw the CLIENT span as its parent, and the caller's
        // tracestate unchanged.
        let sent = upstream.stats().last_request().unwrap();
        assert_eq!(
            sent.headers["traceparent"],
            traceparent(INBOUND_TRACE, client["span_id"].as_str().unwrap(), "01").as_str()
        );
        assert_eq!(sent.headers["tracestate"], INBOUND_STATE);
        // The collector's answer was read as a success.
        assert_eq!(exported_at_least(&gw.shared.metrics, 4).await, 4);
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace_without_its_state() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let (upstream, gw) = traced_gateway(&tracing_section(&receiver.grpc, "grpc", ""), "").await;
    let bad = format!("00-{}-{INBOUND_PARENT}-01", INBOUND_TRACE.to_uppercase());
    chat_ok(
        &gw,
        r#"{"model":"m"}"#,
        &[("traceparent", &bad), ("tracestate", INBOUND_STATE)],
    )
    .await;
    let sent = upstream.stats().last_request().unwrap();
    let upstream_parent = sent.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(sent.headers.get("tracestate").is_none());
    let trace_id = &upstream_parent[3..35];
    assert_ne!(trace_id, INBOUND_TRACE);
    let spans = receiver.spans_of(trace_id, 4);
    let server = by_name(&spans, "POST /v1/chat/completions");
    assert_eq!(server["parent_span_id"], "");
    assert_eq!(server["trace_state"], "");
    let client = by_name(&spans, "chat m");
    assert_eq!(
        &upstream_parent[36..52],
        client["span_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn sampling_is_parent_based_and_unsampled_requests_still_propagate() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let (upstream, gw) = traced_gateway(
        &tracing_section(&receiver.http, "http/protobuf", "  sampling_ratio: 0.0\n"),
        "",
    )
    .await;
    // Not sampled: a new trace at ratio 0, and a caller that did not sample.
    chat(&gw, r#"{"model":"m"}"#).await;
    let fresh = upstream.stats().last_request().unwrap();
    let fresh = fresh.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(fresh.ends_with("-00"), "{fresh}");
    let unsampled_trace = "11111111111111111111111111111111";
    let unsampled = traceparent(unsampled_trace, INBOUND_PARENT, "00");
    chat_ok(&gw, r#"{"model":"m"}"#, &[("traceparent", &unsampled)]).await;
    let sent = upstream.stats().last_request().unwrap();
    let sent = sent.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(sent.starts_with(&format!("00-{unsampled_trace}-")) && sent.ends_with("-00"));
    assert_ne!(
        &sent[36..52],
        INBOUND_PARENT,
        "the gateway's span is the parent"
    );
    // A caller that sampled is followed, whatever the ratio; what arrives before its spans
    // shows that nothing was exported for the two requests before it.
    let sampled = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
    chat_ok(&gw, r#"{"model":"m"}"#, &[("traceparent", &sampled)]).await;
    let spans = receiver.spans_until(INBOUND_TRACE);
    assert!(
        spans.iter().all(|s| s["trace_id"] == INBOUND_TRACE),
        "unsampled spans were exported: {spans:#?}"
    );
    // Whatever order the shards were sent in: four spans in all, the sampled request's.
    assert_eq!(exported_at_least(&gw.shared.metrics, 4).await, 4);
}

#[tokio::test]
async fn content_is_recorded_only_on_routes_that_opt_in() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let (_upstream, gw) = traced_gateway(
        &tracing_section(&receiver.grpc, "grpc", ""),
        "    trace_content: true\n",
    )
    .await;
    for stream in [false, true] {
        let trace = if stream {
            "22222222222222222222222222222222"
        } else {
            "33333333333333333333333333333333"
        };
        let parent = traceparent(trace, INBOUND_PARENT, "01");
        let body = format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"tell me"}}]}}"#
        );
        let answer = chat_ok(&gw, &body, &[("traceparent", &parent)]).await;
        let spans = receiver.spans_of(trace, 4);
        let attributes = &by_name(&spans, "chat m")["attributes"];
        let input: Value =
            serde_json::from_str(attributes["gen_ai.input.messages"].as_str().unwrap()).unwrap();
        assert_eq!(
            input,
            serde_json::json!([{"role": "user", "parts": [{"type": "text", "content": "tell me"}]}])
        );
        let output: Value =
            serde_json::from_str(attributes["gen_ai.output.messages"].as_str().unwrap()).unwrap();
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(output[0]["finish_reason"], "stop");
        let text = output[0]["parts"][0]["content"].as_str().unwrap();
        assert!(!text.is_empty());
        // The recorded text is the text the client got.
        if !stream {
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(text, answer["choices"][0]["message"]["content"]);
        }
    }
}

#[tokio::test]
async fn retries_show_as_one_client_span_per_attempt() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let broken = mock_failing_with(503).await;
    let healthy = mock().await;
    // `config` puts this right after its providers, so `healthy` is one of them.
    let extra = format!(
        "  healthy:\n    type: openai\n    base_url: {}\n{}auth:\n  enabled: false\nroutes:\n  m:\n    versions:\n      main: {{provider: mock, weight: 1}}\n      backup: {{provider: healthy, weight: 0}}\n    fallbacks: [backup]\n    retry: {{max_attempts: 2, backoff: 1ms, max_backoff: 1ms}}\n",
        healthy.base_url(),
        tracing_section(&receiver.grpc, "grpc", ""),
    );
    let yaml = config(&broken.base_url(), &extra);
    let gw = gateway(&yaml).await;
    let parent = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
    chat_ok(&gw, r#"{"model":"m"}"#, &[("traceparent", &parent)]).await;
    let spans = receiver.spans_of(INBOUND_TRACE, 5);
    let mut clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "CLIENT").collect();
    clients.sort_by_key(|s| s["attributes"]["tollgate.attempt"].as_i64());
    assert_eq!(clients.len(), 2);
    let (first, second) = (&clients[0]["attributes"], &clients[1]["attributes"]);
    assert_eq!(first["tollgate.route.version"], "main");
    assert_eq!(first["error.type"], "503");
    assert_eq!(clients[0]["status_code"], "ERROR");
    assert_eq!(second["tollgate.route.version"], "backup");
    assert!(second.get("error.type").is_none());
    assert!(clients[0]["end_ns"].as_u64() <= clients[1]["start_ns"].as_u64());
    let server = by_name(&spans, "POST /v1/chat/completions");
    assert_eq!(server["attributes"]["tollgate.attempts"], 2);
    assert_eq!(server["attributes"]["tollgate.route.version"], "backup");
}

#[tokio::test]
async fn a_shadow_copy_is_traced_under_the_primary_request() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let upstream = mock().await;
    let extra = format!(
        "{}auth:\n  enabled: false\nroutes:\n  m:\n    versions:\n      live: {{provider: mock}}\n      candidate: {{provider: mock, upstream_model: next, shadow: 1.0}}\n",
        tracing_section(&receiver.grpc, "grpc", "")
    );
    let gw = gateway(&config(&upstream.base_url(), &extra)).await;
    let parent = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
    chat_ok(
        &gw,
        r#"{"model":"m","stream":true,"temperature":0.5}"#,
        &[("traceparent", &parent)],
    )
    .await;
    // SERVER, auth, route and the live CLIENT span; the shadow's own span and its CLIENT span.
    let spans = receiver.spans_of(INBOUND_TRACE, 6);
    let server = by_name(&spans, "POST /v1/chat/completions");
    let shadow = by_name(&spans, "tollgate.shadow");
    let copy = by_name(&spans, "chat next");
    assert_eq!(shadow["kind"], "INTERNAL");
    assert_eq!(shadow["parent_span_id"], server["span_id"]);
    assert_eq!(copy["parent_span_id"], shadow["span_id"]);
    assert_eq!(copy["attributes"]["tollgate.route.version"], "candidate");
    assert_eq!(copy["attributes"]["gen_ai.request.stream"], true);
    assert_eq!(copy["attributes"]["gen_ai.request.temperature"], 0.5);
}

#[tokio::test]
async fn a_prompt_request_names_its_prompt_version_on_its_spans() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let upstream = mock().await;
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prompts");
    let extra = format!(
        "{}auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n  demo:\n    provider: demo\n\
         prompts:\n  dir: {prompts}\n  labels:\n    support-answer: {{production: 2}}\n",
        tracing_section(&receiver.grpc, "grpc", "")
    );
    let gw = gateway(&config(&upstream.base_url(), &extra)).await;
    let trace = "44444444444444444444444444444444";
    let parent = traceparent(trace, INBOUND_PARENT, "01");
    let body = r#"{"model":"m","prompt":{"id":"support-answer","variables":{"product":"P","question":"q"}}}"#;
    chat_ok(&gw, body, &[("traceparent", &parent)]).await;
    let spans = receiver.spans_of(trace, 5);
    let server = by_name(&spans, "POST /v1/chat/completions");
    let prompt = by_name(&spans, "tollgate.prompt");
    let route = by_name(&spans, "tollgate.route");
    let hash = gw
        .shared
        .live
        .load()
        .prompts
        .get("support-answer")
        .unwrap()
        .versions["2"]
        .hash
        .to_string();
    for span in [server, prompt, by_name(&spans, "chat m")] {
        let a = &span["attributes"];
        assert_eq!(a["tollgate.prompt.id"], "support-answer", "{span}");
        assert_eq!(a["tollgate.prompt.version"], "2", "{span}");
        assert_eq!(a["tollgate.prompt.hash"], hash.as_str(), "{span}");
    }
    assert_eq!(prompt["kind"], "INTERNAL");
    assert_eq!(prompt["parent_span_id"], server["span_id"]);
    assert_eq!(prompt["attributes"]["tollgate.prompt.canary"], false);
    let start = |s: &Value| s["start_ns"].as_u64().unwrap();
    let end = |s: &Value| s["end_ns"].as_u64().unwrap();
    assert!(
        end(prompt) <= start(route),
        "the prompt renders before routing"
    );

    // A request whose prompt does not resolve: the prompt span carries the error.
    let trace = "55555555555555555555555555555555";
    let parent = traceparent(trace, INBOUND_PARENT, "01");
    let (status, _, _) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"m","prompt":{"id":"support-answer","version":"9"}}"#,
            &[("traceparent", &parent)],
        ),
    )
    .await;
    assert_eq!(status, 404);
    let spans = receiver.spans_of(trace, 3);
    let prompt = by_name(&spans, "tollgate.prompt");
    assert_eq!(
        prompt["attributes"]["error.type"],
        "prompt_version_not_found"
    );

    // The version resolves but a variable is missing: the prompt span names both.
    let trace = "66666666666666666666666666666666";
    let parent = traceparent(trace, INBOUND_PARENT, "01");
    let (status, _, _) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"m","prompt":{"id":"support-answer","variables":{"product":"P"}}}"#,
            &[("traceparent", &parent)],
        ),
    )
    .await;
    assert_eq!(status, 400);
    let spans = receiver.spans_of(trace, 3);
    let prompt = &by_name(&spans, "tollgate.prompt")["attributes"];
    assert_eq!(prompt["tollgate.prompt.version"], "2");
    assert_eq!(prompt["error.type"], "invalid_prompt_variable");
}
