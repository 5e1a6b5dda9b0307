//! Fuzzes the router's path handling: arbitrary request-targets must never panic, and any key
//! the router hands out must be one corvid is willing to fetch (no NUL, no dot segments) and
//! must survive an encode → decode round trip unchanged.
#![no_main]
use corvid::router::{decode_key, encode_key, object_query, split_target, Route, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let router = Router::new(&["/a", "/a/b", "/assets", "/v1/media"]);
    // Route the target both as a full request-target and as a bare path, so the fuzzer
    // reaches the router without having to discover split_target's grammar first.
    let mut paths = vec![target];
    if let Ok((path, query)) = split_target(target) {
        paths.push(path);
        let _ = object_query(query, &mut Vec::new());
    }
    for path in paths {
        if let Ok(Route::Object { key, .. }) = router.route(path) {
            assert!(!key.is_empty());
            assert!(!key.contains('\0'), "NUL in key {key:?}");
            assert!(
                !key.split('/').any(|s| s == "." || s == ".."),
                "dot segment in key {key:?}"
            );
            let again = decode_key(&encode_key(&key)).expect("re-encoded key must decode");
            assert_eq!(again, key);
        }
    }
});
