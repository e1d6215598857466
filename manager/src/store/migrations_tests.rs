//! Released migrations never change. sqlx records the checksum of every migration it applies
//! and refuses to start on a database whose applied migration has since been edited, so an edit
//! (even of a comment) to a released migration would stop every existing manager from starting.
//! A change of schema is a new migration; this test pins the text of the released ones.

use sha2::{Digest, Sha256};

/// (version, SHA-256 of the SQLite text, SHA-256 of the PostgreSQL text).
const RELEASED: &[(i64, &str, &str)] = &[
    (
        1,
        "850221b598b5d33b01bb6be7e97d5af0f4ab6edc8250c864167f2b6f7d1a6c75",
        "829000f01bcad78a7f8154c186dfa886ce8cde1a2003e3f417880c44f923d8cc",
    ),
    (
        2,
        "8cc43e6c081ec5c511c071732c138146a9ad9c7592404754db73cf8fe8d20f96",
        "fcf901c8057ecad39c64fcb7afee9ffc8d88ceccad9a346f9514bb10857b6d15",
    ),
    (
        3,
        "860ad4bdf6c0db5b1ca3f6ad8b53b136fd4080eda08e5fb3add2b98d84be04a6",
        "2e66770d47eae6c10689a9e7a5b79f8909edb17e1a629546f61a436651875440",
    ),
    (
        4,
        "f1fafa8b94210d65b4a7577016231ee8d24ccc3963a2c27c3b695950d3f06232",
        "acf5e9a7985527c2964bf43084aa6b6ba1364b3823b6c02e84f913e28561fc0a",
    ),
    (
        5,
        "27c011d29bf50d100a8e9331244c1edbe576c99968de7ffc70d13f2e24dc0442",
        "35630fdfb48625c0117095d24d8c7eca2ce3afe649d2a88202d8bd97ee9aae9a",
    ),
    (
        6,
        "6483b99b3f593becc5557524a2b66e783eb6b1ab6822b9ec489ec94c56095400",
        "f193328963838379ce92996c5fc5e974da4a0bf91ceba68d8ea2bee52837feae",
    ),
];

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[test]
fn released_migrations_are_never_edited() {
    for (backend, migrations, column) in [
        ("sqlite", super::sqlite::MIGRATIONS, 1),
        ("postgres", super::postgres::MIGRATIONS, 2),
    ] {
        for &(version, name, text) in migrations {
            let Some(pinned) = RELEASED.iter().find(|r| r.0 == version) else {
                continue; // Not released yet: pin it here when it is.
            };
            let want = if column == 1 { pinned.1 } else { pinned.2 };
            assert_eq!(
                sha256(text),
                want,
                "{backend} migration {version} ({name}) was edited after its release: \
                 existing databases would refuse to start; revert it and add a new migration"
            );
        }
    }
}

#[test]
fn both_backends_have_the_same_migrations_in_order() {
    fn versions(m: &[(i64, &'static str, &'static str)]) -> Vec<(i64, &'static str)> {
        m.iter().map(|r| (r.0, r.1)).collect()
    }
    let sqlite = versions(super::sqlite::MIGRATIONS);
    assert_eq!(sqlite, versions(super::postgres::MIGRATIONS));
    let numbers: Vec<i64> = sqlite.iter().map(|r| r.0).collect();
    let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
    assert_eq!(numbers, expected, "numbered 1, 2, 3... without gaps");
}
