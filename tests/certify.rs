//! `ferrocert certify` end to end on the bundled configuration: the gate fails for the
//! backdoored model and every format says why, it passes without that model, report.json is
//! byte-identical across runs and thread counts, each format validates against its schema
//! (our shipped JSON Schema, the official SARIF 2.1.0 schema, a common JUnit XSD), the HTML
//! renders in headless Chromium; and bad configurations are clear errors with file and line.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    common::repo(p)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Run `certify` from the project root (as the README does).
fn certify(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocert"))
        .arg("certify")
        .args(args)
        .current_dir(repo("."))
        .output()
        .expect("run ferrocert");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn validate(schema: &Value, doc: &Value, what: &str) {
    let v = jsonschema::options()
        .should_validate_formats(false)
        .build(schema)
        .expect("schema compiles");
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{:?} at {}", e.kind(), e.instance_path()))
        .map(|m| m.chars().take(300).collect())
        .take(10)
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate:\n{}",
        errors.join("\n")
    );
}

/// Remove every `pattern` keyword equal to `bad`; returns how many.
fn drop_pattern(v: &mut Value, bad: &str) -> usize {
    match v {
        Value::Object(m) => {
            let mut n = 0;
            if m.get("pattern").and_then(Value::as_str) == Some(bad) {
                m.remove("pattern");
                n += 1;
            }
            n + m.values_mut().map(|x| drop_pattern(x, bad)).sum::<usize>()
        }
        Value::Array(a) => a.iter_mut().map(|x| drop_pattern(x, bad)).sum(),
        _ => 0,
    }
}

/// The bundled configuration without the backdoored model, written beside the test's files
/// with absolute paths.
fn config_without_backdoor(dir: &Path) -> PathBuf {
    let text = read(&repo("specs/ferrocert.toml"));
    let cut = text
        .find("# Trained with 10 % poisoned images")
        .expect("the backdoor block");
    let specs = s(&repo("specs"));
    let body = text[..cut]
        .replace("\"../models/", &format!("\"{}/", s(&repo("models"))))
        .replace("\"digits/", &format!("\"{specs}/digits/"));
    assert!(!body.contains("backdoor"));
    let p = dir.join("no_backdoor.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn bundled_run_fails_for_the_backdoor_in_every_format_and_passes_without_it() {
    let dir = common::scratch("certify_default");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let (code, out, err) = certify(&["--out", &s(&a)]);
    assert_eq!(code, 1, "the backdoored model fails the gate\n{out}\n{err}");
    assert!(out.contains("gate FAILED"), "{out}");
    let bad_line = out
        .lines()
        .find(|l| l.contains("digits_mlp_backdoor"))
        .unwrap_or_default();
    assert!(bad_line.contains("FAIL"), "{out}");
    for good in ["digits_mlp ", "digits_cnn", "digits_mlp_noise"] {
        let l = out.lines().find(|l| l.contains(good)).unwrap_or_default();
        assert!(l.contains("PASS"), "{good}: {out}");
    }
    assert!(
        out.contains("label 7 flagged as a backdoor target"),
        "{out}"
    );
    assert!(out.contains("scan:patch:k=2"), "{out}");
    for f in ferrocert::report::render::FILES {
        assert!(a.join(f).is_file(), "{f} missing");
    }

    // Every format says why.
    let report = json(&a.join("report.json"));
    assert_eq!(report["verdict"], "fail");
    let models = report["models"].as_array().unwrap();
    let bd = models
        .iter()
        .find(|m| m["name"] == "digits_mlp_backdoor")
        .unwrap();
    assert_eq!(bd["verdict"], "fail");
    let failures: Vec<&str> = bd["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("scan:triggers") && f.contains("label 7")),
        "{failures:?}"
    );
    assert!(
        failures.iter().all(|f| f.starts_with("scan:")),
        "fails for the backdoor only: {failures:?}"
    );
    for m in models.iter().filter(|m| m["name"] != "digits_mlp_backdoor") {
        assert_eq!(m["verdict"], "pass", "{}", m["name"]);
    }
    let md = read(&a.join("report.md"));
    assert!(
        md.contains("digits_mlp_backdoor — **FAIL**") && md.contains("label 7 flagged"),
        "{md}"
    );
    let html = read(&a.join("report.html"));
    assert!(html.contains("label 7 flagged as a backdoor target"));
    let junit = read(&a.join("junit.xml"));
    let tc = junit
        .find("name=\"scan:triggers\" classname=\"digits_mlp_backdoor.trigger-scan\"")
        .expect("test case");
    assert!(
        junit[tc..]
            .split("</testcase>")
            .next()
            .unwrap()
            .contains("<failure"),
        "{junit}"
    );
    let sarif = json(&a.join("results.sarif"));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let hit = results
        .iter()
        .find(|r| {
            r["ruleId"] == "ferrocert/trigger-scan"
                && r["level"] == "error"
                && r["message"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("digits_mlp_backdoor")
        })
        .expect("an error-level trigger-scan result for the backdoored model");
    assert!(hit["message"]["text"].as_str().unwrap().contains("label 7"));
    assert_eq!(
        hit["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "models/digits_mlp_backdoor.onnx"
    );
    // A spec result points at the spec file and the line of its property.
    let spec = results
        .iter()
        .find(|r| r["ruleId"] == "ferrocert/spec")
        .unwrap();
    let loc = &spec["locations"][0]["physicalLocation"];
    let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
    let line = loc["region"]["startLine"].as_u64().unwrap() as usize;
    let spec_text = read(&repo(uri));
    assert!(
        spec_text.lines().nth(line - 1).unwrap().contains("(assert"),
        "{uri}:{line}"
    );
    assert_eq!(spec["level"], "note");

    // Byte-identical report.json for another run with another thread count.
    let (code_b, _, err_b) = certify(&["--out", &s(&b), "--jobs", "1"]);
    assert_eq!(code_b, 1, "{err_b}");
    assert!(
        read(&a.join("report.json")) == read(&b.join("report.json")),
        "report.json differs between two runs"
    );
    // The fingerprints are stable too (they hash model and property, not the run).
    assert_eq!(
        read(&a.join("results.sarif")),
        read(&b.join("results.sarif"))
    );

    // Validation against the schemas.
    let shipped = json(&repo("schemas/report.schema.json"));
    assert_eq!(
        shipped,
        ferrocert::report::model::report_schema(),
        "schemas/report.schema.json is stale: regenerate it with `ferrocert schema > schemas/report.schema.json`"
    );
    validate(&shipped, &report, "report.json");
    let mut sarif_schema = json(&repo("tests/data/schemas/sarif-schema-2.1.0.json"));
    // The official schema's pattern for the `language` properties,
    // `^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$`, has a stray `]` that the draft-07
    // meta-schema's regex check rejects, so the schema does not compile as published. Drop
    // those keywords only (our log sets no `language`).
    assert!(
        drop_pattern(
            &mut sarif_schema,
            "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$"
        ) > 0
    );
    validate(&sarif_schema, &sarif, "results.sarif");
    match std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(repo("tests/data/schemas/junit-10.xsd"))
        .arg(a.join("junit.xml"))
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "junit.xml does not validate against junit-10.xsd: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!(
            "*** SKIPPED: xmllint not found (scripts/install-deps.sh installs libxml2-utils); junit.xml not validated"
        ),
    }

    // Without the backdoored model the gate passes.
    let cfg = config_without_backdoor(&dir);
    let (code, out, err) = certify(&["--config", &s(&cfg), "--out", &s(&dir.join("c"))]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("gate PASSED (3 of 3 models pass"), "{out}");
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let dir = common::scratch("certify_html");
    // A small configuration keeps this quick: one model, every kind of plot.
    let cfg = dir.join("small.toml");
    let m = s(&repo("models"));
    std::fs::write(
        &cfg,
        format!(
            r#"[[model]]
name = "mlp"
path = "{m}/digits_mlp.onnx"
image_shape = [8, 8]
data = {{ inputs = "{m}/data/test_images_all.npy", labels = "{m}/data/test_labels_all.npy" }}
robustness = {{ radii = [0.01, 0.03], count = 20, timeout = 5 }}
smoothing = {{ sigma = 0.25, n = 2000, count = 20 }}
scan = {{ patch = [2], steps = 200, count = 150 }}
"#
        ),
    )
    .unwrap();
    let out = dir.join("report");
    let (code, stdout, err) = certify(&["--config", &s(&cfg), "--out", &s(&out)]);
    assert!(code == 0, "{stdout}\n{err}");
    let html = read(&out.join("report.html"));
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http")
    );
    for title in [
        "L-inf robustness",
        "CROWN bound of the margin",
        "Randomized smoothing",
        "Reverse-engineered trigger size",
        "patch stamps",
        "Trigger masks",
    ] {
        assert!(html.contains(title), "plot {title:?} missing");
    }
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "*** SKIPPED: chromium not installed (scripts/install-deps.sh chromium); report.html not rendered"
        );
        return;
    }
    let o = std::process::Command::new(repo("scripts/screenshot_report.sh"))
        .arg(&out)
        .arg("1200,1600")
        .output()
        .expect("screenshot script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::File::open(out.join("report.png")).expect("report.png");
    let mut dec = png::Decoder::new(std::io::BufReader::new(png))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; dec.output_buffer_size().unwrap_or(0)];
    let info = dec.next_frame(&mut buf).expect("frame");
    assert_eq!((info.width, info.height), (1200, 1600));
    // Not a blank page: dark text, green pass badges and the charts' colours all appear.
    let px = &buf[..info.buffer_size()];
    let ch = info.color_type.samples();
    let (mut dark, mut green) = (0usize, 0usize);
    for p in px.chunks_exact(ch) {
        let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
        dark += usize::from(r + g + b < 150);
        green += usize::from(g > 100 && r < 60 && b < 80);
    }
    assert!(dark > 2_000, "the page looks blank ({dark} dark pixels)");
    assert!(
        green > 500,
        "no green (pass badge, verified points) on the page ({green})"
    );
}

fn expect_error(config: &str, file: &Path, needles: &[&str]) {
    std::fs::write(file, config).unwrap();
    let (code, out, err) = certify(&[
        "--config",
        &s(file),
        "--out",
        &s(&file.with_extension("out")),
    ]);
    assert_eq!(code, 2, "exit code for {config}\n{out}\n{err}");
    assert!(out.is_empty(), "stdout must stay empty on error: {out}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_configurations_are_clear_errors_with_file_and_line() {
    let dir = common::scratch("certify_bad");
    let m = s(&repo("models"));
    let sp = s(&repo("specs"));
    let f = |name: &str| dir.join(name);
    let model = |extra: &str| {
        format!(
            "[[model]]\nname = \"mlp\"\npath = \"{m}/digits_mlp.onnx\"\ndata = {{ inputs = \"{m}/data/test_images_all.npy\", labels = \"{m}/data/test_labels_all.npy\" }}\n{extra}"
        )
    };
    let cf = f("typo.toml");
    let cfs = s(&cf);
    // A typo in a key: toml names the line and column, and the key.
    expect_error(
        &model("robustnes = { radii = [0.01] }\n"),
        &cf,
        &[&cfs, "line 5", "robustnes"],
    );
    // A typo inside a table.
    let cf = f("typo2.toml");
    expect_error(
        &model("robustness = { radii = [0.01], timout = 3 }\n"),
        &cf,
        &[&s(&cf), "line 5", "timout"],
    );
    // TOML syntax.
    let cf = f("syntax.toml");
    expect_error("[[model]\nname = \"x\"\n", &cf, &[&s(&cf), "line 1"]);
    // A missing model file: the line of `path`.
    let cf = f("missing.toml");
    expect_error(
        "[[model]]\nname = \"x\"\npath = \"nowhere.onnx\"\n",
        &cf,
        &[&format!("{}:3:8", s(&cf)), "nowhere.onnx", "not found"],
    );
    // A spec for another input size: the spec file and the config line.
    let cf = f("spec.toml");
    expect_error(
        &model(&format!(
            "specs = {{ files = [\"{sp}/acasxu/*.vnnlib\"] }}\n"
        )),
        &cf,
        &[&format!("{}:5:", s(&cf)), "acasxu", "input variables"],
    );
    // An eps outside the data's range, and a negative one.
    let cf = f("eps.toml");
    expect_error(
        &model("robustness = { radii = [0.01, 1.5] }\n"),
        &cf,
        &[
            &format!("{}:5:", s(&cf)),
            "radius 1.5 outside the data's range",
        ],
    );
    let cf = f("eps2.toml");
    expect_error(
        &model("robustness = { radii = [-0.1] }\n"),
        &cf,
        &[&format!("{}:5:", s(&cf)), "radius -0.1"],
    );
    // A glob that matches nothing.
    let cf = f("glob.toml");
    expect_error(
        &model(&format!("specs = {{ files = [\"{sp}/none_*.vnnlib\"] }}\n")),
        &cf,
        &[&format!("{}:5:", s(&cf)), "matches no file"],
    );
    // Data that does not fit the model.
    let cf = f("data.toml");
    expect_error(
        &format!(
            "[[model]]\nname = \"acas\"\npath = \"{m}/ACASXU_run2a_1_1_batch_2000.onnx\"\ndata = {{ inputs = \"{m}/data/test_images_all.npy\" }}\nscan = {{}}\n"
        ),
        &cf,
        &[&format!("{}:4:", s(&cf)), "does not match the model input"],
    );
    // A gate condition no check can judge.
    let cf = f("gate.toml");
    expect_error(
        &model(
            "robustness = { radii = [0.01] }\n[model.gate]\ncertified_accuracy = [{ radius = 0.02, min = 0.9 }]\n",
        ),
        &cf,
        &[&format!("{}:2:", s(&cf)), "radius 0.02"],
    );
    // Duplicate model names.
    let cf = f("dup.toml");
    let one = format!("[[model]]\nname = \"a\"\npath = \"{m}/digits_mlp.onnx\"\n");
    expect_error(
        &format!("{one}{one}"),
        &cf,
        &[&format!("{}:5:", s(&cf)), "duplicate model name"],
    );
    // No configuration at all.
    let (code, _, err) = certify(&["--config", &s(&f("absent.toml"))]);
    assert_eq!(code, 2);
    assert!(err.contains("absent.toml"), "{err}");
}
