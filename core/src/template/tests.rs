use super::*;
use proptest::prelude::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn render_with(src: &str, data: &BTreeMap<Dependency, Value>) -> Rendered {
    let t = parse(src, "", "").unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
    let env = |k: &str| (k == "HOME").then(|| "/root".to_string());
    let ctx = RenderContext {
        data,
        env: &env,
        now_unix: 1_700_000_000,
    };
    t.render(&ctx).unwrap_or_else(|e| panic!("render {src:?}: {e}"))
}

/// Render a template that needs no Consul data.
fn r(src: &str) -> String {
    let out = render_with(src, &BTreeMap::new());
    assert!(out.is_complete(), "{src:?} is missing {:?}", out.missing);
    out.output
}

fn render_err(src: &str) -> RenderError {
    let t = parse(src, "", "").unwrap();
    let data = BTreeMap::new();
    let ctx = RenderContext {
        data: &data,
        env: &no_env,
        now_unix: 0,
    };
    t.render(&ctx).expect_err(src)
}

fn parse_err(src: &str) -> String {
    parse(src, "", "").expect_err(src).to_string()
}

// ---- text, trimming, comments, delimiters ----

#[test]
fn text_is_verbatim() {
    assert_eq!(r(""), "");
    assert_eq!(r("  a\n\tb  \n"), "  a\n\tb  \n");
    assert_eq!(r("x {{ \"y\" }} z"), "x y z");
}

#[test]
fn trim_markers_trim_neighbouring_whitespace_only() {
    assert_eq!(r("a  \n {{- \"b\" -}} \n  c"), "abc");
    assert_eq!(r("a  {{- \"b\" }}  c"), "ab  c");
    assert_eq!(r("a  {{ \"b\" -}}  c"), "a  bc");
    // `{{-3}}` is the number -3, not a trim marker.
    assert_eq!(r("a {{-3}} b"), "a -3 b");
    assert_eq!(r("a {{ 3 -}}\n\n b"), "a 3b");
}

#[test]
fn comments_vanish_and_can_trim() {
    assert_eq!(r("a{{/* hidden */}}b"), "ab");
    assert_eq!(r("a \n{{- /* hidden */ -}}\n b"), "ab");
    assert!(parse_err("a{{/* x */ .}}").contains("comment ends before closing delimiter"));
    assert!(parse_err("a{{/* x").contains("unclosed comment"));
}

#[test]
fn custom_delimiters() {
    let t = parse("[[ \"a\" ]] {{ not an action }} [[- \"b\" -]] c", "[[", "]]").unwrap();
    let data = BTreeMap::new();
    let ctx = RenderContext {
        data: &data,
        env: &no_env,
        now_unix: 0,
    };
    assert_eq!(t.render(&ctx).unwrap().output, "a {{ not an action }}bc");
}

// ---- literals, fields, pipes ----

#[test]
fn literals_print_like_go() {
    assert_eq!(r(r#"{{ "a\tb\"" }}"#), "a\tb\"");
    assert_eq!(r("{{ `raw\\n` }}"), "raw\\n");
    assert_eq!(
        r("{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 1_000 }} {{ 'a' }}"),
        "42 -7 31 1000 97"
    );
    assert_eq!(r("{{ 1.5 }} {{ 1e3 }} {{ 2.0 }} {{ 1e21 }}"), "1.5 1000 2 1e+21");
    assert_eq!(r("{{ true }} {{ false }}"), "true false");
    assert_eq!(r("{{ .Missing }}"), "<no value>");
    assert_eq!(r("{{ split \",\" \"a,b\" }}"), "[a b]");
}

#[test]
fn pipes_pass_the_value_as_last_argument() {
    assert_eq!(r(r#"{{ "a,b,c" | split "," | join ";" }}"#), "a;b;c");
    assert_eq!(r(r#"{{ "Hello" | printf "%s, world" }}"#), "Hello, world");
    assert_eq!(
        r(r#"{{ 5 | subtract 2 }} {{ 3 | add 2 }} {{ 10 | divide 4 }} {{ 10 | modulo 4 }} {{ 3 | multiply 4 }}"#),
        "3 5 2 2 12"
    );
    assert_eq!(r("{{ 1.5 | add 1 }}"), "2.5");
    assert_eq!(r(r#"{{ (printf "%d" 3) }}{{ ("x") | toUpper }}"#), "3X");
}

#[test]
fn fields_of_json_values_and_parenthesised_pipelines() {
    let src = r#"{{ $o := parseJSON "{\"a\":{\"b\":[1,2,3]},\"n\":\"x\"}" }}{{ $o.a.b }} {{ ($o.a).b | len }} {{ with $o }}{{ .n }}{{ end }}"#;
    assert_eq!(r(src), "[1 2 3] 3 x");
    assert_eq!(r(r#"{{ (parseJSON "{\"k\":7}").k }}"#), "7");
}

// ---- control structures ----

#[test]
fn if_else_if_else() {
    let t = |v: &str| {
        r(&format!(
            "{{{{ $v := {v} }}}}{{{{ if eq $v 1 }}}}one{{{{ else if eq $v 2 }}}}two{{{{ else }}}}many{{{{ end }}}}"
        ))
    };
    assert_eq!(t("1"), "one");
    assert_eq!(t("2"), "two");
    assert_eq!(t("3"), "many");
    assert_eq!(
        r(r#"{{ if "" }}y{{ else }}n{{ end }}{{ if 0 }}y{{ end }}{{ if "x" }}y{{ end }}"#),
        "ny"
    );
}

#[test]
fn with_rebinds_dot_and_has_else() {
    assert_eq!(r(r#"{{ with "x" }}[{{ . }}]{{ end }}"#), "[x]");
    assert_eq!(r(r#"{{ with "" }}[{{ . }}]{{ else }}empty{{ end }}"#), "empty");
    assert_eq!(r(r#"{{ with "" }}a{{ else with "b" }}{{ . }}{{ end }}"#), "b");
}

#[test]
fn range_over_lists_maps_and_empties() {
    assert_eq!(r(r#"{{ range split "," "a,b,c" }}<{{ . }}>{{ end }}"#), "<a><b><c>");
    assert_eq!(
        r(r#"{{ range $i, $e := split "," "a,b" }}{{ $i }}={{ $e }} {{ end }}"#),
        "0=a 1=b "
    );
    assert_eq!(r(r#"{{ range $e := split "," "a,b" }}{{ $e }}{{ end }}"#), "ab");
    assert_eq!(
        r(r#"{{ range $k, $v := parseJSON "{\"b\":2,\"a\":1}" }}{{ $k }}{{ $v }}{{ end }}"#),
        "a1b2"
    );
    assert_eq!(r(r#"{{ range split "," "" }}x{{ else }}none{{ end }}"#), "none");
    assert_eq!(
        r("{{ range loop 3 }}{{ . }}{{ end }} {{ range loop 2 4 }}{{ . }}{{ end }}"),
        "012 23"
    );
    assert_eq!(
        r("{{ range loop 6 }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}"),
        "023"
    );
}

#[test]
fn variables_declare_assign_and_scope() {
    assert_eq!(r(r#"{{ $x := "a" }}{{ $x }}{{ $x = "b" }}{{ $x }}"#), "ab");
    // Assignment inside a block changes the outer variable; a declaration shadows it.
    assert_eq!(
        r(r#"{{ $x := 1 }}{{ range loop 3 }}{{ $x = . }}{{ end }}{{ $x }}"#),
        "2"
    );
    assert_eq!(
        r(r#"{{ $x := 1 }}{{ if true }}{{ $x := 5 }}{{ $x }}{{ end }}{{ $x }}"#),
        "51"
    );
    assert!(parse_err(r#"{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}"#).contains("undefined variable \"$y\""));
    assert!(parse_err(r#"{{ $z = 1 }}"#).contains("undefined variable \"$z\""));
}

// ---- builtins ----

#[test]
fn comparisons_and_logic() {
    assert_eq!(
        r("{{ eq 1 1 }} {{ eq 1 2 3 1 }} {{ ne \"a\" \"b\" }} {{ eq 1 1.0 }}"),
        "true true true true"
    );
    assert_eq!(
        r("{{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1 2 }}"),
        "true true true false"
    );
    assert_eq!(
        r(r#"{{ and 1 "" 3 }}|{{ and 1 2 }}|{{ or 0 "" }}|{{ or 0 "x" }}|{{ not 0 }}"#),
        "|2||x|true"
    );
    // `and` stops at the first false value, so the erroring call is never made.
    assert_eq!(r(r#"{{ and false (index (split "," "") 5) }}"#), "false");
    assert!(render_err(r#"{{ lt 1 "a" }}"#).msg.contains("incompatible types"));
}

#[test]
fn len_index_slice_printf() {
    assert_eq!(r(r#"{{ len "héllo" }} {{ len (split "," "a,b") }}"#), "6 2");
    assert_eq!(
        r(r#"{{ index (split "," "a,b") 1 }} {{ index (parseJSON "{\"k\":\"v\"}") "k" }}"#),
        "b v"
    );
    assert_eq!(
        r(r#"{{ slice "abcdef" 1 3 }} {{ slice (split "," "a,b,c") 1 }}"#),
        "bc [b c]"
    );
    assert_eq!(
        r(r#"{{ printf "%s|%5s|%-4s|%d|%03d|%x|%.2f|%v|%q|%t|%%|%d" "a" "b" "c" 7 7 255 3.14159 true "q" false }}"#),
        "a|    b|c   |7|007|ff|3.14|true|\"q\"|false|%|%!d(MISSING)"
    );
    assert_eq!(r(r#"{{ printf "%d" "x" }}"#), "%!d(string=x)");
    assert_eq!(r(r#"{{ printf "a" 1 }}"#), "a%!(EXTRA int=1)");
    assert_eq!(r(r#"{{ print "a" 1 2 "b" }}|{{ println 1 2 }}"#), "a1 2b|1 2\n");
    let e = render_err(r#"{{ index (split "," "a") 3 }}"#);
    assert!(e.msg.contains("index out of range"), "{e}");
}

// ---- consul-template helpers ----

#[test]
fn string_helpers() {
    assert_eq!(r(r#"{{ "a-b-c" | replaceAll "-" "_" }}"#), "a_b_c");
    assert_eq!(
        r(r#"{{ "MiXed" | toLower }} {{ "MiXed" | toUpper }} {{ "hello world" | toTitle }}"#),
        "mixed MIXED Hello World"
    );
    assert_eq!(
        r(r#"[{{ "  x \n" | trimSpace }}] {{ "xxhixx" | trim "x" }} {{ "v1.2" | trimPrefix "v" }}"#),
        "[x] hi 1.2"
    );
    assert_eq!(
        r(r#"{{ split "," "a,b" | contains "b" }} {{ "foobar" | contains "oba" }} {{ contains "z" (split "," "a") }}"#),
        "true true false"
    );
    assert_eq!(
        r(r#"{{ "42" | parseInt | add 1 }} {{ "1.5" | parseFloat }} {{ "true" | parseBool }}"#),
        "43 1.5 true"
    );
    assert_eq!(r(r#"{{ "a\nb" | indent 2 }}"#), "  a\n  b");
    assert_eq!(r(r#"{{ "hi" | base64Encode }} {{ "aGk=" | base64Decode }}"#), "aGk= hi");
}

#[test]
fn json_round_trip() {
    assert_eq!(
        r(r#"{{ parseJSON "{\"b\":[1,\"x\",null],\"a\":true}" | toJSON }}"#),
        r#"{"a":true,"b":[1,"x",null]}"#
    );
    assert_eq!(r(r#"{{ split "," "a,b" | toJSON }}"#), r#"["a","b"]"#);
    assert!(render_err(r#"{{ parseJSON "{" }}"#).msg.contains("parseJSON"));
}

#[test]
fn env_and_timestamp() {
    assert_eq!(
        r(r#"{{ env "HOME" }}|{{ env "NOPE" }}|{{ envOrDefault "NOPE" "d" }}"#),
        "/root||d"
    );
    // 1_700_000_000 is 2023-11-14T22:13:20Z, a Tuesday.
    assert_eq!(r("{{ timestamp }}"), "2023-11-14T22:13:20Z");
    assert_eq!(
        r(r#"{{ timestamp "Mon Jan _2 15:04:05 2006" }}"#),
        "Tue Nov 14 22:13:20 2023"
    );
    assert_eq!(r(r#"{{ timestamp "2006-01-02" }}"#), "2023-11-14");
}

// ---- parse errors ----

#[test]
fn parse_errors_point_at_line_and_column() {
    assert_eq!(
        parse_err("upstream {\n  x\n  {{ .Address } }}\n"),
        "3:15: unexpected \"}\" in operand"
    );
    assert_eq!(parse_err("a {{ .X"), "1:3: unclosed action");
    assert_eq!(parse_err("\n\n {{ nosuch 1 }}"), "3:5: function \"nosuch\" not defined");
    assert_eq!(parse_err("{{ end }}"), "1:4: unexpected {{end}}");
    assert_eq!(
        parse_err("x\n{{ range service \"a\" }}y"),
        "2:4: unexpected EOF: {{range}} has no {{end}}"
    );
    assert_eq!(
        parse_err("{{ \"a\" \"b\" }}"),
        "1:4: can't give argument to non-function \"a\""
    );
    assert_eq!(parse_err("{{ }}"), "1:4: missing value for command");
    assert_eq!(parse_err("{{ \"abc }}"), "1:4: unterminated quoted string");
    assert_eq!(parse_err("{{ break }}"), "1:4: {{break}} outside {{range}}");
    assert_eq!(
        parse_err("{{ if 1 }}{{ else }}{{ else }}{{ end }}"),
        "1:24: expected end; found {{else}}"
    );
    assert_eq!(parse_err("{{ 1 | }}"), "1:8: missing command after |");
    assert_eq!(parse_err("é{{ ) }}"), "1:5: unexpected \")\" in command");
}

#[test]
fn nesting_is_capped_not_a_stack_overflow() {
    let deep = format!("{}1{}", "{{ ".to_string() + &"(".repeat(5000), ")".repeat(5000) + " }}");
    assert!(parse_err(&deep).contains("nests deeper than"));
    let deep_blocks = "{{ if 1 }}".repeat(5000) + &"{{ end }}".repeat(5000);
    assert!(parse_err(&deep_blocks).contains("nests deeper than"));
    let ok = "{{ if 1 }}".repeat(MAX_DEPTH) + "x" + &"{{ end }}".repeat(MAX_DEPTH);
    assert_eq!(r(&ok), "x");
}

// ---- Consul data ----

fn check(id: &str, status: &str) -> String {
    format!(r#"{{"Node":"n","CheckID":"{id}","Name":"{id}","Status":"{status}","ServiceID":"","Output":""}}"#)
}

/// One `/v1/health/service` entry, as Consul encodes it.
fn entry(node: &str, node_addr: &str, id: &str, svc_addr: &str, port: u16, statuses: &[&str]) -> String {
    let checks: Vec<String> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| check(&format!("c{i}"), s))
        .collect();
    format!(
        r#"{{"Node":{{"ID":"id-{node}","Node":"{node}","Address":"{node_addr}","Datacenter":"dc1","TaggedAddresses":{{"lan":"{node_addr}"}},"Meta":{{"rack":"r1"}}}},
           "Service":{{"ID":"{id}","Service":"nginx","Tags":["b","a"],"Address":"{svc_addr}","Meta":{{}},"Port":{port},"Weights":{{"Passing":1,"Warning":1}}}},
           "Checks":[{}]}}"#,
        checks.join(",")
    )
}

fn health_data(dep: &Dependency, entries: &[String]) -> BTreeMap<Dependency, Value> {
    let body = format!("[{}]", entries.join(","));
    let value = dep.decode(Some(body.as_bytes())).unwrap();
    BTreeMap::from([(dep.clone(), value)])
}

const TUTORIAL: &str =
    "upstream http_backend {\n  {{range service \"nginx\"}}\n  server {{.Address}}:{{.Port}};\n  {{end}}\n}\n";

fn nginx() -> Dependency {
    dep::parse_service("nginx", None).unwrap()
}

#[test]
fn tutorial_template_golden_with_0_1_and_3_instances() {
    let out = render_with(TUTORIAL, &BTreeMap::new());
    assert_eq!(out.missing, BTreeSet::from([nginx()]));

    let zero = render_with(TUTORIAL, &health_data(&nginx(), &[]));
    assert!(zero.is_complete());
    assert_eq!(zero.output, "upstream http_backend {\n  \n}\n");

    let one = render_with(
        TUTORIAL,
        &health_data(
            &nginx(),
            &[entry("host2", "10.0.0.2", "nginx-1", "172.17.0.3", 32768, &["passing"])],
        ),
    );
    assert_eq!(
        one.output,
        "upstream http_backend {\n  \n  server 172.17.0.3:32768;\n  \n}\n"
    );

    // Given out of order; rendered by Node then ID. An empty service address falls back to the node's.
    let three = render_with(
        TUTORIAL,
        &health_data(
            &nginx(),
            &[
                entry("host3", "10.0.0.3", "nginx-b", "", 83, &["passing"]),
                entry(
                    "host2",
                    "10.0.0.2",
                    "nginx-z",
                    "172.17.0.4",
                    32769,
                    &["passing", "passing"],
                ),
                entry("host2", "10.0.0.2", "nginx-a", "172.17.0.3", 32768, &[]),
            ],
        ),
    );
    assert_eq!(
        three.output,
        "upstream http_backend {\n  \n  server 172.17.0.3:32768;\n  \n  server 172.17.0.4:32769;\n  \n  server 10.0.0.3:83;\n  \n}\n"
    );
}

#[test]
fn service_query_strings_and_requests() {
    let d = dep::parse_service("prod.web@dc2", None).unwrap();
    assert_eq!(
        d,
        Dependency::HealthService {
            name: "web".into(),
            tag: Some("prod".into()),
            dc: Some("dc2".into()),
            near: None,
            filter: vec!["passing".into()],
        }
    );
    let req = d.request("local").unwrap();
    assert_eq!(req.path, "/v1/health/service/web");
    let q: Vec<(&str, &str)> = req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(q, [("dc", "dc2"), ("tag", "prod"), ("passing", "1")]);
    // Any other filter fetches everything and filters client-side.
    let any = dep::parse_service("web|any", None).unwrap();
    assert!(!any.request("").unwrap().query.iter().any(|(k, _)| k == "passing"));
    assert_eq!(
        dep::parse_service("web", Some("warning,passing")).unwrap(),
        dep::parse_service("web|passing,warning", None).unwrap()
    );
    assert!(dep::parse_service("we b", None).is_err());
    assert!(dep::parse_service("web|bogus", None).is_err());
    assert_eq!(
        dep::parse_service("a.b.web", None).unwrap().to_string(),
        "health.service(a.b.web|passing)"
    );
}

#[test]
fn service_fields_status_and_filters() {
    let entries = [
        entry("n1", "10.0.0.1", "w1", "", 80, &["passing"]),
        entry("n2", "10.0.0.2", "w2", "", 80, &["passing", "warning"]),
        entry("n3", "10.0.0.3", "w3", "", 80, &["critical"]),
    ];
    let src = |q: &str| format!("{{{{ range service \"{q}\" }}}}{{{{ .ID }}}}:{{{{ .Status }}}} {{{{ end }}}}");
    let q = |s: &str| dep::parse_service(s, None).unwrap();
    assert_eq!(
        render_with(&src("nginx"), &health_data(&q("nginx"), &entries)).output,
        "w1:passing "
    );
    assert_eq!(
        render_with(
            &src("nginx|passing,warning"),
            &health_data(&q("nginx|passing,warning"), &entries)
        )
        .output,
        "w1:passing w2:warning "
    );
    assert_eq!(
        render_with(&src("nginx|any"), &health_data(&q("nginx|any"), &entries)).output,
        "w1:passing w2:warning w3:critical "
    );
    let fields = "{{ range service \"nginx\" }}{{ .Node }} {{ .NodeID }} {{ .NodeAddress }} {{ .NodeTaggedAddresses.lan }} {{ .NodeMeta.rack }} [{{ .ServiceMeta.none }}] {{ .Name }} {{ .Tags }} {{ len .Checks }} {{ .Weights.Passing }} {{ (index .Checks 0).CheckID }}{{ end }}";
    assert_eq!(
        render_with(fields, &health_data(&nginx(), &entries[..1])).output,
        "n1 id-n1 10.0.0.1 10.0.0.1 r1 [] nginx [a b] 1 1 c0"
    );
    let method = "{{ range service \"nginx\" }}{{ if .Tags.Contains \"b\" }}b{{ end }}{{ if .Tags.Contains \"zz\" }}z{{ end }}{{ $s := . }}{{ $s.Tags.Contains \"a\" }}{{ end }}";
    assert_eq!(
        render_with(method, &health_data(&nginx(), &entries[..1])).output,
        "btrue"
    );
    let tagged = "{{ range $tag, $s := service \"nginx\" | byTag }}{{ $tag }}={{ len $s }} {{ end }}";
    assert_eq!(render_with(tagged, &health_data(&nginx(), &entries)).output, "a=1 b=1 ");
}

fn kv_body(pairs: &[(&str, &str)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(v);
            format!(r#"{{"Key":"{k}","Value":"{b64}","Flags":0,"LockIndex":0,"CreateIndex":5,"ModifyIndex":7}}"#)
        })
        .collect();
    format!("[{}]", items.join(","))
}
use base64::Engine as _;

fn kv(key: &str) -> Dependency {
    dep::parse_kv(key).unwrap()
}

#[test]
fn key_blocks_until_present_key_or_default_does_not() {
    let empty = BTreeMap::new();
    let out = render_with(r#"a={{ key "app/a" }}"#, &empty);
    assert_eq!(out.missing, BTreeSet::from([kv("app/a")]));

    let absent = BTreeMap::from([(kv("app/a"), kv("app/a").decode(None).unwrap())]);
    let out = render_with(r#"a={{ key "app/a" }}"#, &absent);
    assert!(!out.is_complete(), "a missing key blocks rendering");
    let out = render_with(r#"{{ keyOrDefault "app/a" "dflt" }} {{ keyExists "app/a" }}"#, &absent);
    assert_eq!((out.is_complete(), out.output.as_str()), (true, "dflt false"));

    let body = kv_body(&[("app/a", "hello")]);
    let present = BTreeMap::from([(kv("app/a"), kv("app/a").decode(Some(body.as_bytes())).unwrap())]);
    let out = render_with(
        r#"{{ key "app/a" }} {{ keyOrDefault "/app/a" "d" }} {{ keyExists "app/a" }}"#,
        &present,
    );
    assert_eq!((out.is_complete(), out.output.as_str()), (true, "hello hello true"));
    assert_eq!(out.used, BTreeSet::from([kv("app/a")]));
    assert_eq!(
        kv("app/a@dc2").request("").unwrap().query,
        vec![("dc".to_string(), "dc2".to_string())]
    );
}

#[test]
fn ls_tree_and_by_key() {
    let d = dep::parse_kv_list("app");
    let body = kv_body(&[
        ("app/", ""),
        ("app/a", "1"),
        ("app/b", "2"),
        ("app/sub/", ""),
        ("app/sub/c", "3"),
    ]);
    let data = BTreeMap::from([(d.clone(), d.decode(Some(body.as_bytes())).unwrap())]);
    let out = render_with(
        r#"{{ range ls "app" }}{{ .Key }}={{ .Value }} {{ end }}|{{ range tree "app" }}{{ .Key }} {{ end }}"#,
        &data,
    );
    assert_eq!(out.output, "a=1 b=2 |a b sub/c ");
    let out = render_with(
        r#"{{ range $dir, $pairs := tree "app" | byKey }}{{ $dir }}:{{ range $pairs }}{{ .Key }}{{ end }}{{ end }}"#,
        &data,
    );
    assert_eq!(out.output, "sub:c");
    assert_eq!(
        d.request("").unwrap().query,
        vec![("recurse".to_string(), String::new())]
    );
    // A 404 is an empty list, which `safeLs` refuses to render.
    let none = BTreeMap::from([(d.clone(), d.decode(None).unwrap())]);
    assert!(render_with(r#"{{ range ls "app" }}x{{ end }}"#, &none).is_complete());
    assert!(!render_with(r#"{{ range safeLs "app" }}x{{ end }}"#, &none).is_complete());
}

#[test]
fn catalog_functions() {
    let services = Dependency::CatalogServices { dc: None };
    let nodes = Dependency::CatalogNodes { dc: None, near: None };
    let node = Dependency::CatalogNode {
        name: Some("n1".into()),
        dc: None,
    };
    let dcs = Dependency::CatalogDatacenters;
    let data = BTreeMap::from([
        (services.clone(), services.decode(Some(br#"{"web":["z","a"],"consul":[]}"#)).unwrap()),
        (nodes.clone(), nodes.decode(Some(br#"[{"ID":"2","Node":"n2","Address":"10.0.0.2"},{"ID":"1","Node":"n1","Address":"10.0.0.1","Meta":{"k":"v"}}]"#)).unwrap()),
        (node.clone(), node.decode(Some(br#"{"Node":{"ID":"1","Node":"n1","Address":"10.0.0.1"},"Services":{"w2":{"ID":"w2","Service":"web","Port":81},"db":{"ID":"db","Service":"db","Port":5432,"Tags":["x"]}}}"#)).unwrap()),
        (dcs.clone(), dcs.decode(Some(br#"["dc2","dc1"]"#)).unwrap()),
    ]);
    let src = r#"{{ range services }}{{ .Name }}{{ .Tags }} {{ end }}|{{ range nodes }}{{ .Node }}@{{ .Address }} {{ end }}|{{ with node "n1" }}{{ .Node.Node }}:{{ range .Services }}{{ .Service }}/{{ .Port }} {{ end }}{{ end }}|{{ datacenters }}"#;
    let out = render_with(src, &data);
    assert!(out.is_complete(), "{:?}", out.missing);
    assert_eq!(
        out.output,
        "consul[] web[a z] |n1@10.0.0.1 n2@10.0.0.2 |n1:db/5432 web/81 |[dc1 dc2]"
    );
    // N+1: each service's health is a dependency discovered in the same pass.
    let out = render_with(
        r#"{{ range services }}{{ range service .Name }}{{ end }}{{ end }}"#,
        &data,
    );
    assert_eq!(out.missing.len(), 2);
    assert!(!dcs.request("").unwrap().blocking);
    assert_eq!(
        Dependency::CatalogNode { name: None, dc: None }
            .request("me")
            .unwrap()
            .path,
        "/v1/catalog/node/me"
    );
}

#[test]
fn file_is_a_dependency() {
    let d = Dependency::File { path: "/etc/x".into() };
    assert_eq!(
        render_with(r#"{{ file "/etc/x" }}"#, &BTreeMap::new()).missing,
        BTreeSet::from([d.clone()])
    );
    let data = BTreeMap::from([(d.clone(), d.decode(Some(b"contents")).unwrap())]);
    assert_eq!(render_with(r#"{{ file "/etc/x" }}"#, &data).output, "contents");
    assert!(d.request("").is_none());
}

#[test]
fn errors_while_data_is_missing_mean_incomplete_not_failed() {
    let out = render_with(r#"{{ (index (service "web") 0).Address }}"#, &BTreeMap::new());
    assert!(!out.is_complete());
    let e = render_err(r#"x{{ 1 | divide 0 }}"#);
    assert_eq!((e.line, e.col), (1, 9));
    assert!(e.msg.contains("division by zero"));
}

// ---- robustness ----

fn arb_template() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "range",
        "if",
        "else",
        "end",
        "with",
        "$x :=",
        "$x =",
        "$i, $e :=",
        "$x",
        "$i",
        "$e",
        "$",
        "|",
        "(",
        ")",
        ".",
        ".A",
        ".A.B",
        "\"s\"",
        "`r`",
        "1",
        "-2",
        "1.5",
        "true",
        "nil",
        "eq",
        "lt",
        "len",
        "index",
        "printf",
        "\"%d%s%v%5.2f%q%x\"",
        "service",
        "\"web\"",
        "key",
        "\"k\"",
        "keyOrDefault",
        "tree",
        "ls",
        "split",
        "join",
        "toJSON",
        "parseJSON",
        "loop",
        "add",
        "divide",
        "modulo",
        "0",
        "break",
        "continue",
        "and",
        "or",
        "not",
        "slice",
        "byTag",
        "timestamp",
        "'a'",
        "0x",
        "}",
        "{",
        "/*",
        "*/",
        ",",
        "-",
    ]);
    let action = (prop::collection::vec(token, 0..5), any::<(bool, bool)>()).prop_map(|(toks, (l, r))| {
        format!(
            "{{{{{} {} {}}}}}",
            if l { "-" } else { "" },
            toks.join(" "),
            if r { "-" } else { "" }
        )
    });
    let text = prop::sample::select(vec!["", " ", "\n", "x", "{{", "}}", "{", "{{-", " -}}"]).prop_map(String::from);
    let whole = prop::sample::select(vec![
        "{{ range service \"web\" }}",
        "{{ range $i, $e := . }}",
        "{{ end }}",
        "{{ end }}",
        "{{ if .A }}",
        "{{ else }}",
        "{{ with . }}",
        "{{ .A }}",
        "{{ . }}",
        "{{ key \"k\" }}",
        "{{ $x := . }}",
        "{{ $x }}",
        "{{ printf \"%v\" . }}",
        "{{ index . 0 }}",
        "{{ len . }}",
        "{{ toJSON . }}",
        "{{ break }}",
        "{{- . -}}",
    ])
    .prop_map(String::from);
    prop::collection::vec(prop_oneof![1 => action, 1 => text, 5 => whole], 0..12).prop_map(|v| v.concat())
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        "[a-z%]{0,4}".prop_map(Value::Str),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::list),
            prop::collection::btree_map("[A-Za-z]{1,3}", inner, 0..4).prop_map(Value::map),
        ]
    })
}

/// The generator must reach the renderer, not just the parser's error paths.
#[test]
fn generated_templates_often_parse() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = arb_template();
    let total = 2000;
    let parsed = (0..total)
        .filter(|_| parse(&strategy.new_tree(&mut runner).unwrap().current(), "", "").is_ok())
        .count();
    eprintln!("{parsed} of {total} generated templates parse");
    assert!(
        parsed * 10 > total,
        "only {parsed} of {total} generated templates parse"
    );
}

proptest! {
    #[test]
    fn rendering_never_panics(src in arb_template(), v in arb_value(), k in arb_value()) {
        if let Ok(t) = parse(&src, "", "") {
            let web = dep::parse_service("web", None).unwrap();
            let data = BTreeMap::from([(web, v), (kv("k"), k)]);
            let ctx = RenderContext { data: &data, env: &no_env, now_unix: -1 };
            let _ = t.render(&ctx);
        }
    }

    #[test]
    fn decoding_any_json_never_panics(v in arb_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let deps = [
            kv("k"),
            dep::parse_kv_list("p"),
            dep::parse_service("web|any", None).unwrap(),
            dep::parse_service("web", None).unwrap(),
            Dependency::CatalogServices { dc: None },
            Dependency::CatalogNode { name: None, dc: None },
            Dependency::CatalogNodes { dc: None, near: None },
            Dependency::CatalogDatacenters,
        ];
        let json = serde_json::to_vec(&v.to_json()).unwrap();
        for d in &deps {
            let _ = d.decode(Some(&json));
            let _ = d.decode(Some(&raw));
            let _ = d.decode(None);
        }
    }

    #[test]
    fn text_without_delimiters_renders_verbatim(s in "[^{}]*") {
        prop_assert_eq!(r(&s), s);
    }
}

#[test]
fn every_function_the_parser_accepts_is_implemented() {
    for name in funcs::NAMES {
        let t = parse(&format!("{{{{ {name} }}}}"), "", "").unwrap();
        let data = BTreeMap::new();
        let ctx = RenderContext {
            data: &data,
            env: &no_env,
            now_unix: 0,
        };
        if let Err(e) = t.render(&ctx) {
            assert!(!e.msg.contains("not defined"), "{name}: {e}");
        }
    }
}
