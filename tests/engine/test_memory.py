"""tfmedgan.engine.memory: the process allocator setting (the per-layer accounting is tested with
the models that use it)."""


def test_unmap_large_allocations_sets_glibcs_threshold_unless_the_user_did(monkeypatch):
    import platform

    from tfmedgan.engine.memory import unmap_large_allocations

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    assert unmap_large_allocations() is False  # the user's setting is left alone
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    if platform.libc_ver()[0] == "glibc":
        assert unmap_large_allocations() is True
