"""The monitor's own delta triggers on the dispatcher's tables, as pandamon migrations 0001 and 0002
created them and migration 0003 drops them (the change feed now belongs to the engine, decision
0006). Frozen text: migrations must not follow later changes of the application's modules."""

# The triggers and their functions, appending to pandamon_jobsummarydelta and pandamon_errordelta.
CREATE_TRIGGERS: tuple[str, ...] = (
    """
    CREATE OR REPLACE FUNCTION pandamon_job_delta_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pandamon_jobsummarydelta (statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode, delta)
            SELECT n.statechangetime, n.jobstatus, COALESCE(n.computingsite, ''), n.produsername, n.label, n.jeditaskid, n.workflow_id, n.attemptnr, n.resource_type, n.prodsourcelabel, n.piloterrorcode, n.exeerrorcode, n.ddmerrorcode, n.transexitcode, 1 FROM pandamon_new_rows n WHERE n.statechangetime IS NOT NULL;
        ELSE
            INSERT INTO pandamon_jobsummarydelta (statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode, delta)
            SELECT o.statechangetime, o.jobstatus, COALESCE(o.computingsite, ''), o.produsername, o.label, o.jeditaskid, o.workflow_id, o.attemptnr, o.resource_type, o.prodsourcelabel, o.piloterrorcode, o.exeerrorcode, o.ddmerrorcode, o.transexitcode, -1 FROM pandamon_old_rows o WHERE o.statechangetime IS NOT NULL;
        END IF;
        RETURN NULL;
    END $$""",
    """
    CREATE OR REPLACE FUNCTION pandamon_job_delta_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.statechangetime IS NOT NULL AND NEW.statechangetime IS NOT NULL THEN
            INSERT INTO pandamon_jobsummarydelta (statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode, delta) VALUES (OLD.statechangetime, OLD.jobstatus, COALESCE(OLD.computingsite, ''), OLD.produsername, OLD.label, OLD.jeditaskid, OLD.workflow_id, OLD.attemptnr, OLD.resource_type, OLD.prodsourcelabel, OLD.piloterrorcode, OLD.exeerrorcode, OLD.ddmerrorcode, OLD.transexitcode, -1), (NEW.statechangetime, NEW.jobstatus, COALESCE(NEW.computingsite, ''), NEW.produsername, NEW.label, NEW.jeditaskid, NEW.workflow_id, NEW.attemptnr, NEW.resource_type, NEW.prodsourcelabel, NEW.piloterrorcode, NEW.exeerrorcode, NEW.ddmerrorcode, NEW.transexitcode, 1);
        ELSIF OLD.statechangetime IS NOT NULL THEN
            INSERT INTO pandamon_jobsummarydelta (statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode, delta) VALUES (OLD.statechangetime, OLD.jobstatus, COALESCE(OLD.computingsite, ''), OLD.produsername, OLD.label, OLD.jeditaskid, OLD.workflow_id, OLD.attemptnr, OLD.resource_type, OLD.prodsourcelabel, OLD.piloterrorcode, OLD.exeerrorcode, OLD.ddmerrorcode, OLD.transexitcode, -1);
        ELSIF NEW.statechangetime IS NOT NULL THEN
            INSERT INTO pandamon_jobsummarydelta (statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode, delta) VALUES (NEW.statechangetime, NEW.jobstatus, COALESCE(NEW.computingsite, ''), NEW.produsername, NEW.label, NEW.jeditaskid, NEW.workflow_id, NEW.attemptnr, NEW.resource_type, NEW.prodsourcelabel, NEW.piloterrorcode, NEW.exeerrorcode, NEW.ddmerrorcode, NEW.transexitcode, 1);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER pandamon_job_summary_insert AFTER INSERT ON dispatcher_job
       REFERENCING NEW TABLE AS pandamon_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_job_delta_bulk()""",
    """CREATE TRIGGER pandamon_job_summary_delete AFTER DELETE ON dispatcher_job
       REFERENCING OLD TABLE AS pandamon_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_job_delta_bulk()""",
    """CREATE TRIGGER pandamon_job_summary_update
       AFTER UPDATE OF statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode ON dispatcher_job
       FOR EACH ROW WHEN ((OLD.statechangetime IS DISTINCT FROM NEW.statechangetime OR OLD.jobstatus IS DISTINCT FROM NEW.jobstatus OR OLD.computingsite IS DISTINCT FROM NEW.computingsite OR OLD.produsername IS DISTINCT FROM NEW.produsername OR OLD.label IS DISTINCT FROM NEW.label OR OLD.jeditaskid IS DISTINCT FROM NEW.jeditaskid OR OLD.workflow_id IS DISTINCT FROM NEW.workflow_id OR OLD.attemptnr IS DISTINCT FROM NEW.attemptnr OR OLD.resource_type IS DISTINCT FROM NEW.resource_type OR OLD.prodsourcelabel IS DISTINCT FROM NEW.prodsourcelabel OR OLD.piloterrorcode IS DISTINCT FROM NEW.piloterrorcode OR OLD.exeerrorcode IS DISTINCT FROM NEW.exeerrorcode OR OLD.ddmerrorcode IS DISTINCT FROM NEW.ddmerrorcode OR OLD.transexitcode IS DISTINCT FROM NEW.transexitcode) AND current_setting('ailuro.rollup_inline_deltas', true) IS DISTINCT FROM 'on')
       EXECUTE FUNCTION pandamon_job_delta_update()""",
    """
    CREATE OR REPLACE FUNCTION pandamon_attempt_delta_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pandamon_errordelta (endtime, job_id, jeditaskid, produsername, computingsite, piloterrorcode, piloterrordiag, exeerrorcode, exeerrordiag, transexitcode, ddmerrorcode, ddmerrordiag, jobdispatchererrorcode, jobdispatchererrordiag, superrorcode, superrordiag, taskbuffererrorcode, taskbuffererrordiag, delta) SELECT n.endtime, n.job_id, j.jeditaskid, j.produsername, n.computingsite, n.piloterrorcode, n.piloterrordiag, n.exeerrorcode, n.exeerrordiag, n.transexitcode, n.ddmerrorcode, n.ddmerrordiag, n.jobdispatchererrorcode, n.jobdispatchererrordiag, n.superrorcode, n.superrordiag, n.taskbuffererrorcode, n.taskbuffererrordiag, 1 FROM pandamon_new_rows n JOIN dispatcher_job j ON j.pandaid = n.job_id WHERE n.jobstatus = 'failed';
        ELSE
            INSERT INTO pandamon_errordelta (endtime, job_id, jeditaskid, produsername, computingsite, piloterrorcode, piloterrordiag, exeerrorcode, exeerrordiag, transexitcode, ddmerrorcode, ddmerrordiag, jobdispatchererrorcode, jobdispatchererrordiag, superrorcode, superrordiag, taskbuffererrorcode, taskbuffererrordiag, delta) SELECT o.endtime, o.job_id, j.jeditaskid, j.produsername, o.computingsite, o.piloterrorcode, o.piloterrordiag, o.exeerrorcode, o.exeerrordiag, o.transexitcode, o.ddmerrorcode, o.ddmerrordiag, o.jobdispatchererrorcode, o.jobdispatchererrordiag, o.superrorcode, o.superrordiag, o.taskbuffererrorcode, o.taskbuffererrordiag, -1 FROM pandamon_old_rows o JOIN dispatcher_job j ON j.pandaid = o.job_id WHERE o.jobstatus = 'failed';
        END IF;
        RETURN NULL;
    END $$""",
    """
    CREATE OR REPLACE FUNCTION pandamon_attempt_delta_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO pandamon_errordelta (endtime, job_id, jeditaskid, produsername, computingsite, piloterrorcode, piloterrordiag, exeerrorcode, exeerrordiag, transexitcode, ddmerrorcode, ddmerrordiag, jobdispatchererrorcode, jobdispatchererrordiag, superrorcode, superrordiag, taskbuffererrorcode, taskbuffererrordiag, delta)
        SELECT a.endtime, a.job_id, j.jeditaskid, j.produsername, a.computingsite, a.piloterrorcode, a.piloterrordiag, a.exeerrorcode, a.exeerrordiag, a.transexitcode, a.ddmerrorcode, a.ddmerrordiag, a.jobdispatchererrorcode, a.jobdispatchererrordiag, a.superrorcode, a.superrordiag, a.taskbuffererrorcode, a.taskbuffererrordiag, -1 FROM (SELECT OLD.*) a JOIN dispatcher_job j ON j.pandaid = a.job_id WHERE a.jobstatus = 'failed'
        UNION ALL
        SELECT a.endtime, a.job_id, j.jeditaskid, j.produsername, a.computingsite, a.piloterrorcode, a.piloterrordiag, a.exeerrorcode, a.exeerrordiag, a.transexitcode, a.ddmerrorcode, a.ddmerrordiag, a.jobdispatchererrorcode, a.jobdispatchererrordiag, a.superrorcode, a.superrordiag, a.taskbuffererrorcode, a.taskbuffererrordiag, 1 FROM (SELECT NEW.*) a JOIN dispatcher_job j ON j.pandaid = a.job_id WHERE a.jobstatus = 'failed';
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER pandamon_error_summary_insert AFTER INSERT ON dispatcher_jobattempt
       REFERENCING NEW TABLE AS pandamon_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_attempt_delta_bulk()""",
    """CREATE TRIGGER pandamon_error_summary_delete AFTER DELETE ON dispatcher_jobattempt
       REFERENCING OLD TABLE AS pandamon_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_attempt_delta_bulk()""",
    """CREATE TRIGGER pandamon_error_summary_update AFTER UPDATE ON dispatcher_jobattempt
       FOR EACH ROW WHEN (OLD.jobstatus IS DISTINCT FROM NEW.jobstatus OR OLD.endtime IS DISTINCT FROM NEW.endtime OR OLD.job_id IS DISTINCT FROM NEW.job_id OR OLD.computingsite IS DISTINCT FROM NEW.computingsite OR OLD.piloterrorcode IS DISTINCT FROM NEW.piloterrorcode OR OLD.piloterrordiag IS DISTINCT FROM NEW.piloterrordiag OR OLD.exeerrorcode IS DISTINCT FROM NEW.exeerrorcode OR OLD.exeerrordiag IS DISTINCT FROM NEW.exeerrordiag OR OLD.transexitcode IS DISTINCT FROM NEW.transexitcode OR OLD.ddmerrorcode IS DISTINCT FROM NEW.ddmerrorcode OR OLD.ddmerrordiag IS DISTINCT FROM NEW.ddmerrordiag OR OLD.jobdispatchererrorcode IS DISTINCT FROM NEW.jobdispatchererrorcode OR OLD.jobdispatchererrordiag IS DISTINCT FROM NEW.jobdispatchererrordiag OR OLD.superrorcode IS DISTINCT FROM NEW.superrorcode OR OLD.superrordiag IS DISTINCT FROM NEW.superrordiag OR OLD.taskbuffererrorcode IS DISTINCT FROM NEW.taskbuffererrorcode OR OLD.taskbuffererrordiag IS DISTINCT FROM NEW.taskbuffererrordiag)
       EXECUTE FUNCTION pandamon_attempt_delta_update()""",
)

# The update trigger skipping the rows of a statement that wrote its own deltas (migration 0002).
CREATE_JOB_UPDATE_TRIGGER = """CREATE TRIGGER pandamon_job_summary_update
       AFTER UPDATE OF statechangetime, jobstatus, computingsite, produsername, label, jeditaskid, workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode, ddmerrorcode, transexitcode ON dispatcher_job
       FOR EACH ROW WHEN ((OLD.statechangetime IS DISTINCT FROM NEW.statechangetime OR OLD.jobstatus IS DISTINCT FROM NEW.jobstatus OR OLD.computingsite IS DISTINCT FROM NEW.computingsite OR OLD.produsername IS DISTINCT FROM NEW.produsername OR OLD.label IS DISTINCT FROM NEW.label OR OLD.jeditaskid IS DISTINCT FROM NEW.jeditaskid OR OLD.workflow_id IS DISTINCT FROM NEW.workflow_id OR OLD.attemptnr IS DISTINCT FROM NEW.attemptnr OR OLD.resource_type IS DISTINCT FROM NEW.resource_type OR OLD.prodsourcelabel IS DISTINCT FROM NEW.prodsourcelabel OR OLD.piloterrorcode IS DISTINCT FROM NEW.piloterrorcode OR OLD.exeerrorcode IS DISTINCT FROM NEW.exeerrorcode OR OLD.ddmerrorcode IS DISTINCT FROM NEW.ddmerrorcode OR OLD.transexitcode IS DISTINCT FROM NEW.transexitcode) AND current_setting('ailuro.rollup_inline_deltas', true) IS DISTINCT FROM 'on')
       EXECUTE FUNCTION pandamon_job_delta_update()"""

DROP_TRIGGERS: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS pandamon_job_summary_insert ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_job_summary_delete ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_job_summary_update ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_insert ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_delete ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_update ON dispatcher_jobattempt",
    "DROP FUNCTION IF EXISTS pandamon_job_delta_bulk()",
    "DROP FUNCTION IF EXISTS pandamon_job_delta_update()",
    "DROP FUNCTION IF EXISTS pandamon_attempt_delta_bulk()",
    "DROP FUNCTION IF EXISTS pandamon_attempt_delta_update()",
)

JOB_DELTA_COLUMNS: tuple[str, ...] = ('statechangetime', 'jobstatus', 'computingsite', 'produsername', 'label', 'jeditaskid', 'workflow_id', 'attemptnr', 'resource_type', 'prodsourcelabel', 'piloterrorcode', 'exeerrorcode', 'ddmerrorcode', 'transexitcode')
ERROR_DELTA_COLUMNS: tuple[str, ...] = ('endtime', 'job_id', 'jeditaskid', 'produsername', 'computingsite', 'piloterrorcode', 'piloterrordiag', 'exeerrorcode', 'exeerrordiag', 'transexitcode', 'ddmerrorcode', 'ddmerrordiag', 'jobdispatchererrorcode', 'jobdispatchererrordiag', 'superrorcode', 'superrordiag', 'taskbuffererrorcode', 'taskbuffererrordiag')
