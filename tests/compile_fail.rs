//! Rules the compiler must enforce (groups, threads), proven by programs
//! that must not compile (trybuild compares the errors with tests/ui/*.stderr).

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
