"""Long waits in slices (plugins/plugin_utils/waiting.py): how a wait is cut, what a progress line says."""

from ansible_collections.meshops.istio.plugins.plugin_utils.waiting import describe_sidecars, slices


def test_a_wait_is_cut_into_slices_that_add_up_to_the_whole_timeout():
    assert list(slices(40, 15)) == [(0, 15, False), (15, 15, False), (30, 10, True)]
    assert list(slices(30, 15)) == [(0, 15, False), (15, 15, True)]
    assert list(slices(5, 15)) == [(0, 5, True)]


def test_the_sidecar_progress_counts_ready_pods_with_a_sidecar_and_names_what_is_missing():
    report = {
        "namespaces": [
            {"namespace": "shop", "eligible": 4, "in_mesh": 3, "not_ready": 1, "complete": False},
            {"namespace": "cart", "eligible": 2, "in_mesh": 2, "not_ready": 0, "complete": True},
        ]
    }
    assert describe_sidecars(report) == "4/6 pods with a sidecar and Ready; not complete yet: shop"
