use proptest::prelude::*;
use serde_json::json;
use time::macros::datetime;

use super::*;

fn release(channel: &str, n: u64) -> Release {
    Release {
        channel: channel.parse().unwrap(),
        number: ReleaseNumber::new(n).unwrap(),
        tar_sha256: Sha256Digest::of(format!("tar {channel} {n}").as_bytes()),
        tar_length: 10_240 * n,
        min_agent_version: AgentVersion::new(1, 0, 0),
        waves: parse_waves_spec("10%@+0h,100%@+1d", datetime!(2026-12-01 00:00:00 UTC)).unwrap(),
    }
}

fn pair(r: &Release) -> [NamedTarget; 2] {
    [
        r.target(ReleaseKind::Bundle, 999, Sha256Digest::of(b"gz")),
        r.target(ReleaseKind::Index, 99, Sha256Digest::of(b"index")),
    ]
}

fn select(
    targets: &[NamedTarget],
    channel: &str,
    trusted: Option<u64>,
    agent: &str,
) -> Result<Option<SelectedRelease>, ReleaseError> {
    select_release(
        targets.iter().map(|t| (t.name.as_str(), &t.file)),
        &channel.parse().unwrap(),
        trusted.map(|n| ReleaseNumber::new(n).unwrap()),
        &agent.parse().unwrap(),
    )
}

#[test]
fn channel_names() {
    for ok in ["prod", "a", "eu-west-1", "0", &"a".repeat(63)] {
        assert!(ok.parse::<Channel>().is_ok(), "{ok}");
    }
    for bad in ["", "-a", "a-", "Prod", "a_b", "a.b", "a/b", &"a".repeat(64)] {
        assert!(bad.parse::<Channel>().is_err(), "{bad}");
    }
    assert!(ReleaseNumber::new(0).is_err());
}

#[test]
fn targets_round_trip_through_custom_fields() {
    let r = release("prod", 7);
    let [bundle, index] = pair(&r);
    assert_eq!(bundle.name, "channels/prod/7/bundle.tar.gz");
    assert_eq!(index.name, "channels/prod/7/index.json");
    let info = ReleaseInfo::from_target(&bundle.name, &bundle.file)
        .unwrap()
        .unwrap();
    assert_eq!((info.kind, &info.release), (ReleaseKind::Bundle, &r));
    let custom = index.file.custom.as_ref().unwrap();
    assert_eq!(custom["mast"]["kind"], "index");
    assert_eq!(custom["mast"]["waves"][0]["start"], "2026-12-01T00:00:00Z");
    // Canonical JSON has no floats; the custom object must encode.
    crate::canonical::encode(&index.file).unwrap();

    let plain = TargetFile {
        custom: Some(json!({"other": 1})),
        ..bundle.file.clone()
    };
    assert_eq!(ReleaseInfo::from_target("x", &plain).unwrap(), None);
    let none = TargetFile {
        custom: None,
        ..bundle.file
    };
    assert_eq!(ReleaseInfo::from_target("x", &none).unwrap(), None);
}

#[test]
fn picks_the_highest_complete_release_of_the_channel() {
    let mut targets: Vec<NamedTarget> = [1, 2, 10]
        .iter()
        .flat_map(|n| pair(&release("prod", *n)))
        .collect();
    // Release 11 is half there: skipped. Other channels are not considered, even when newer or broken.
    targets.push(pair(&release("prod", 11))[0].clone());
    targets.extend(pair(&release("staging", 50)));
    let mut broken = pair(&release("staging", 51))[0].clone();
    broken.file.custom = Some(json!({"mast": {"kind": "??"}}));
    targets.push(broken);

    let picked = select(&targets, "prod", Some(2), "1.0.0").unwrap().unwrap();
    assert_eq!(picked.release, release("prod", 10));
    assert_eq!(picked.bundle.name, "channels/prod/10/bundle.tar.gz");
    assert_eq!(picked.index.name, "channels/prod/10/index.json");
    assert_eq!(picked.bundle.file, pair(&release("prod", 10))[0].file);

    // Equal to the trusted release: fine, nothing new.
    let same = select(&targets, "prod", Some(10), "1.0.0")
        .unwrap()
        .unwrap();
    assert_eq!(same.release.number.get(), 10);
    assert_eq!(select(&targets, "nope", Some(3), "1.0.0").unwrap(), None);
}

#[test]
fn refuses_rollback() {
    let targets: Vec<NamedTarget> = [3, 4]
        .iter()
        .flat_map(|n| pair(&release("prod", *n)))
        .collect();
    let err = select(&targets, "prod", Some(5), "1.0.0").unwrap_err();
    assert_eq!(
        err,
        ReleaseError::Rollback {
            channel: "prod".parse().unwrap(),
            trusted: ReleaseNumber::new(5).unwrap(),
            found: ReleaseNumber::new(4).unwrap(),
        }
    );
    assert_eq!(
        err.to_string(),
        "channel prod: newest release offered is 4, below the trusted release 5"
    );
}

#[test]
fn enforces_min_agent_version() {
    let mut r = release("prod", 3);
    r.min_agent_version = AgentVersion::parse_release("1.4.0").unwrap();
    let targets = pair(&r);
    let err = select(&targets, "prod", None, "1.3.9").unwrap_err();
    assert_eq!(
        err.to_string(),
        "release needs agent 1.4.0 or later, this is 1.3.9"
    );
    assert!(select(&targets, "prod", None, "1.4.0-rc.1").is_err());
    assert!(select(&targets, "prod", None, "1.4.0").unwrap().is_some());
    assert!(select(&targets, "prod", None, "1.10.0").unwrap().is_some());
}

#[test]
fn inconsistent_pairs_are_errors_naming_both() {
    let r = release("prod", 3);
    for (field, change) in [
        ("tar_sha256", json!(Sha256Digest::of(b"other").to_hex())),
        ("tar_length", json!(1)),
        ("min_agent_version", json!("2.0.0")),
        ("waves", json!([])),
    ] {
        let mut targets = pair(&r);
        targets[1].file.custom.as_mut().unwrap()["mast"][field] = change;
        let err = select(&targets, "prod", None, "9.0.0").unwrap_err();
        assert_eq!(
            err,
            ReleaseError::Inconsistent {
                bundle: "channels/prod/3/bundle.tar.gz".into(),
                index: "channels/prod/3/index.json".into(),
                field,
            }
        );
    }
}

#[test]
fn hostile_custom_fields_name_the_target_and_field() {
    let good = pair(&release("prod", 3))[0].clone();
    let big = serde_json::from_str::<Value>("18446744073709551616").unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("release", json!(-3), "release"),
        ("release", big.clone(), "release"),
        ("release", json!("3"), "release"),
        ("release", json!(3.0), "release"),
        ("release", json!(0), "release"),
        ("tar_length", json!(-1), "tar_length"),
        ("tar_length", big, "tar_length"),
        ("tar_length", json!("10"), "tar_length"),
        ("kind", json!("delta"), "kind"),
        ("kind", json!(1), "kind"),
        ("channel", json!("Prod"), "channel"),
        ("tar_sha256", json!("ABC"), "tar_sha256"),
        ("min_agent_version", json!("1.0"), "min_agent_version"),
        ("min_agent_version", json!(1), "min_agent_version"),
        ("waves", json!({}), "waves"),
        (
            "waves",
            json!([{"seed_below": 0, "start": "2026-12-01T00:00:00Z"}]),
            "waves[0].seed_below",
        ),
        (
            "waves",
            json!([{"seed_below": 10001, "start": "2026-12-01T00:00:00Z"}]),
            "waves[0].seed_below",
        ),
        (
            "waves",
            json!([{"seed_below": 65537, "start": "2026-12-01T00:00:00Z"}]),
            "waves[0].seed_below",
        ),
        (
            "waves",
            json!([{"seed_below": 10, "start": "2026-12-01"}]),
            "waves[0].start",
        ),
        (
            "waves",
            json!([{"seed_below": 10, "start": "2026-12-01T00:00:00Z"}, {"seed_below": 5, "start": "2026-12-01T00:00:00Z"}]),
            "waves",
        ),
    ];
    for (field, value, named) in cases {
        let mut t = good.clone();
        t.file.custom.as_mut().unwrap()["mast"][field] = value.clone();
        match ReleaseInfo::from_target(&t.name, &t.file) {
            Err(ReleaseError::Field {
                target, field: f, ..
            }) => {
                assert_eq!(
                    (target.as_str(), f.as_str()),
                    (good.name.as_str(), named),
                    "{field}={value}"
                );
            }
            other => panic!("{field}={value}: {other:?}"),
        }
        // Through selection too: a malformed target of the channel stops it.
        let err = select(std::slice::from_ref(&t), "prod", None, "1.0.0").unwrap_err();
        assert!(err.to_string().contains(&good.name), "{err}");
    }

    let mut missing = good.clone();
    missing.file.custom.as_mut().unwrap()["mast"]
        .as_object_mut()
        .unwrap()
        .remove("tar_sha256");
    let err = ReleaseInfo::from_target(&missing.name, &missing.file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target \"channels/prod/3/bundle.tar.gz\": custom.mast.tar_sha256: missing"
    );

    let mut not_object = good.clone();
    not_object.file.custom = Some(json!({"mast": [1]}));
    let err = ReleaseInfo::from_target(&not_object.name, &not_object.file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target \"channels/prod/3/bundle.tar.gz\": custom.mast is not an object"
    );

    // A target whose custom fields describe another release than its path.
    let err = ReleaseInfo::from_target("channels/prod/4/bundle.tar.gz", &good.file).unwrap_err();
    assert!(matches!(err, ReleaseError::Path { .. }), "{err}");
    let err = ReleaseInfo::from_target("channels/prod/3/index.json", &good.file).unwrap_err();
    assert!(
        err.to_string()
            .contains("describes channels/prod/3/bundle.tar.gz"),
        "{err}"
    );

    // Waves absent: everyone at once.
    let mut no_waves = good;
    no_waves.file.custom.as_mut().unwrap()["mast"]
        .as_object_mut()
        .unwrap()
        .remove("waves");
    let info = ReleaseInfo::from_target(&no_waves.name, &no_waves.file)
        .unwrap()
        .unwrap();
    assert!(info.release.waves.is_empty());
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
    ]
}

proptest! {
    /// Whatever value replaces whatever field, reading never panics, and an error names the target.
    #[test]
    fn any_field_value_is_read_or_refused_by_name(
        field in prop::sample::select(vec!["kind", "channel", "release", "tar_sha256", "tar_length",
                                           "min_agent_version", "waves", "extra", "<all of it>"]),
        value in arb_scalar(),
    ) {
        let mut t = pair(&release("prod", 3))[1].clone();
        let custom = t.file.custom.as_mut().unwrap();
        if field == "<all of it>" {
            custom["mast"] = value;
        } else {
            custom["mast"][field] = value;
        }
        match ReleaseInfo::from_target(&t.name, &t.file) {
            Ok(Some(info)) => prop_assert_eq!(info.release.number.get(), 3),
            Ok(None) => prop_assert!(false, "custom.mast is present"),
            Err(e) => prop_assert!(e.to_string().contains(&t.name), "{}", e),
        }
    }
}
