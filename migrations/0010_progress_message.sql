-- What a running step is doing now, as its agent's last progress report said it ("step 2/3 install_apk:
-- pushing 5.0 of 12.0 MB · 4 s"; "step 1/1 run_tests: 7 of 10 tests done · 1 failed"): the dashboard shows it
-- under the run's bar. Plain PostgreSQL, as 0001 (runs on Supabase unchanged).
ALTER TABLE assignments ADD COLUMN progress_message text;
