//! The behavioural suite every backend must pass: async/sync/watch, dependencies,
//! coalescing, TTL, versions and invalidation, failures, tenants and bad input — over a
//! real gRPC server on a loopback port. One module per concept; each case runs once per
//! backend (`embedded::NAME`, `nats::NAME`).

mod asking;
mod backfill;
mod catalog;
mod export;
mod failures;
mod freshness;
mod graph;
mod inputs;
mod log;
mod publish;
mod refresh;
mod relations;
mod schedule;

use asking::*;
use backfill::*;
use catalog::*;
use export::*;
use failures::*;
use freshness::*;
use graph::*;
use inputs::*;
use log::*;
use publish::*;
use refresh::*;
use relations::*;
use schedule::*;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, f64_of, feature, text};
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::{TestClient, test_config, wait_until};
use futures::StreamExt;
use tonic::Code;

const LONG: Duration = Duration::from_secs(20);

/// `words`: the number of words of the request input `text`.
fn words() -> api::FeatureDefinition {
    feature(
        "words",
        "text.stats@1",
        &[("stat", "words")],
        &[("text", "request:text")],
        600_000,
    )
}

fn probe(name: &str, params: &[(&str, &str)]) -> api::FeatureDefinition {
    feature(name, "test.probe@1", params, &[], 600_000)
}

fn statuses(r: &api::GetFeaturesResponse) -> Vec<Status> {
    r.results.iter().map(|x| x.status()).collect()
}

fstore_tests::on_every_backend!(
    tls;
    async_then_ticket_until_ready,
    sync_waits_and_keeps_its_deadline,
    watch_delivers_every_result_once,
    chain_and_diamond_compute_in_order,
    cycles_and_unknowns_are_refused,
    concurrent_identical_requests_compute_once,
    ttl_expiry_recomputes,
    version_bump_and_invalidate_recompute_downstream,
    staleness_bounds_and_stale_serving,
    failures_are_reported_and_retried,
    failures_expire_and_recompute,
    expired_inputs_are_computed_again,
    transient_failures_are_not_cached,
    request_inputs_are_part_of_the_key,
    tenants_do_not_share,
    bad_input_gets_a_status_that_says_what_to_fix,
    lists_and_describes,
    flows_show_the_callers_jobs_and_the_slots,
    dead_letters_keep_exhausted_jobs_for_replay,
    settled_computes_are_logged_with_inputs_and_tickets,
    stored_inputs_are_logged_and_used,
    a_resumed_subscriber_sees_every_event,
    cancelled_tickets_drop_their_unstarted_jobs,
    tickets_keep_their_results_then_expire,
    log_reads_that_cannot_be_served_are_refused,
    point_in_time_join_never_leaks_a_later_value,
    a_backfill_computes_each_pair_once_and_a_rerun_skips_it,
    a_bad_backfill_is_refused_whole,
    a_cancelled_backfill_submits_nothing_more,
    interactive_calls_go_before_a_backfill,
    a_backfill_outlives_the_replica_running_it,
    the_gate_publishes_refuses_and_rolls_back,
    staging_an_online_feature_is_refused,
    refresh_ahead_keeps_a_hot_key_cached,
    a_schedule_runs_by_itself_once_per_period,
    features_read_related_entities_one_and_two_hops_away,
    relations_that_cannot_type_check_are_refused,
    references_before_their_entities_are_enriched_when_they_arrive,
    the_sweep_enriches_what_no_arrival_announced,
    an_awaiting_aggregate_completes_without_its_caller,
);
