// @generated automatically by Diesel CLI (and kept matching
// migrations/ by hand where diesel_cli is not installed).

diesel::table! {
    votes (voter_id) {
        voter_id -> Text,
        option -> Text,
        ts -> Int8,
        vote_id -> Text,
        node -> Text,
        committed_at -> Timestamptz,
    }
}

diesel::table! {
    vote_counts (option, backend) {
        option -> Text,
        backend -> Int4,
        n -> Int8,
    }
}

diesel::table! {
    node_counts (node, backend) {
        node -> Text,
        backend -> Int4,
        n -> Int8,
    }
}
