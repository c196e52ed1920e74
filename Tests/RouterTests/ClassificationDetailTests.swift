import Router
import Testing

private func classify(_ sql: String, volatile: Set<String> = []) -> Classification {
    QueryClassifier.classify(sql, volatileFunctions: volatile)
}

@Suite struct TransactionClassificationTests {
    @Test(arguments: [
        ("BEGIN", TransactionEffect.begin(readOnly: nil)),
        ("BEGIN WORK", .begin(readOnly: nil)),
        ("BEGIN READ ONLY", .begin(readOnly: true)),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", .begin(readOnly: nil)),
        ("BEGIN ISOLATION LEVEL READ UNCOMMITTED READ WRITE", .begin(readOnly: false)),
        ("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE, DEFERRABLE", .begin(readOnly: true)),
        ("COMMIT", .commit), ("END TRANSACTION", .commit), ("COMMIT AND CHAIN", .commit),
        ("ROLLBACK", .rollback), ("ABORT", .rollback), ("ROLLBACK AND NO CHAIN", .rollback),
        ("ROLLBACK TO SAVEPOINT a", .savepoint), ("ROLLBACK WORK TO a", .savepoint),
        ("SAVEPOINT a", .savepoint), ("RELEASE a", .savepoint),
        ("SET TRANSACTION READ ONLY", .setTransaction(readOnly: true)),
        ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", .setTransaction(readOnly: nil)),
        ("SET transaction_read_only = on", .setTransaction(readOnly: true)),
        ("SET LOCAL transaction_read_only TO 'off'", .setTransaction(readOnly: false)),
        ("SET transaction_isolation = 'serializable'", .setTransaction(readOnly: nil)),
        ("PREPARE TRANSACTION 'gid'", .prepareTransaction),
    ])
    func transactionControlIsRecognized(_ sql: String, _ effect: TransactionEffect) {
        #expect(classify(sql).transaction == effect)
    }

    @Test func theLastTransactionStatementWins() {
        #expect(classify("BEGIN; COMMIT; BEGIN READ ONLY").transaction == .begin(readOnly: true))
        #expect(classify("BEGIN; SELECT 1; COMMIT").transaction == .commit)
    }

    @Test func aBeginWithoutCommitLeavesTheTransactionOpen() {
        let open = classify("BEGIN; SELECT 1")
        #expect(open.leavesTransactionOpen)
        #expect(open.transactionReadOnly == nil)

        let closed = classify("BEGIN; SELECT 1; COMMIT")
        #expect(!closed.leavesTransactionOpen)

        let rolledBack = classify("BEGIN; SELECT 1; ROLLBACK")
        #expect(!rolledBack.leavesTransactionOpen)

        let prepared = classify("BEGIN; PREPARE TRANSACTION 'x'")
        #expect(!prepared.leavesTransactionOpen)
    }

    @Test func theDeclaredAccessModeOfTheOpenTransactionIsReported() {
        #expect(classify("BEGIN READ ONLY").transactionReadOnly == true)
        #expect(classify("BEGIN; SET TRANSACTION READ ONLY; SELECT 1").transactionReadOnly == true)
        #expect(classify("BEGIN READ ONLY; SET TRANSACTION READ WRITE").transactionReadOnly == false)
        #expect(classify("START TRANSACTION ISOLATION LEVEL REPEATABLE READ").transactionReadOnly == nil)
        #expect(classify("SET TRANSACTION READ ONLY").transactionReadOnly == nil, "no block opened here")
    }

    @Test func commitAndChainKeepsTheBlockOpen() {
        #expect(classify("BEGIN; UPDATE t SET a = 1; COMMIT AND CHAIN").leavesTransactionOpen)
        #expect(!classify("BEGIN; UPDATE t SET a = 1; COMMIT AND NO CHAIN").leavesTransactionOpen)
    }

    @Test func rollbackToSavepointDoesNotEndTheTransaction() {
        #expect(classify("BEGIN; SAVEPOINT a; ROLLBACK TO a").leavesTransactionOpen)
    }
}

@Suite struct PinClassificationTests {
    @Test(arguments: [
        ("CREATE TEMP TABLE t (id int)", PinReason.temporaryTable),
        ("CREATE TEMPORARY SEQUENCE s", .temporaryTable),
        ("CREATE GLOBAL TEMPORARY TABLE t (id int)", .temporaryTable),
        ("CREATE TABLE pg_temp.t (id int)", .temporaryTable),
        ("CREATE TEMP TABLE t (id int) ON COMMIT DELETE ROWS", .temporaryTable),
        ("SELECT * INTO TEMP t FROM u", .temporaryTable),
        ("SELECT * INTO TEMPORARY TABLE t FROM u", .temporaryTable),
        ("SELECT pg_advisory_lock(1)", .sessionAdvisoryLock),
        ("SELECT pg_advisory_lock_shared(1, 2)", .sessionAdvisoryLock),
        ("SELECT pg_try_advisory_lock(1)", .sessionAdvisoryLock),
        ("SELECT pg_catalog.pg_try_advisory_lock_shared(1)", .sessionAdvisoryLock),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", .holdCursor),
        ("DECLARE c BINARY SCROLL CURSOR WITH HOLD FOR SELECT * FROM t", .holdCursor),
        ("LISTEN jobs", .listen),
        ("PREPARE q AS SELECT 1", .sqlPrepare),
        ("PREPARE q (int, text) AS SELECT $1, $2", .sqlPrepare),
        ("SELECT set_config('app.tenant', $1, false)", .untrackedSetting),
        ("SELECT set_config('app.tenant', '42', $2)", .untrackedSetting),
        ("SELECT set_config('app.tenant', tenant_id::text, false) FROM tenants", .untrackedSetting),
    ])
    func sessionStateOnOneServerPinsTheSession(_ sql: String, _ reason: PinReason) {
        #expect(classify(sql).pin == reason)
    }

    @Test(arguments: [
        "SELECT 1",
        "CREATE TABLE t (id int)",
        "CREATE TEMP TABLE t (id int) ON COMMIT DROP",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
        "SELECT set_config('app.tenant', '42', true)",
        "SELECT set_config('app.tenant', '42', false)",
        "SELECT 'LISTEN x'",
        "EXPLAIN SELECT pg_advisory_lock(1)",
        "PREPARE TRANSACTION 'x'",
    ])
    func transactionScopedStateDoesNotPin(_ sql: String) {
        #expect(classify(sql).pin == nil)
    }

    @Test(arguments: [
        ("DEALLOCATE ALL", UnpinEffect.deallocateAll),
        ("DEALLOCATE PREPARE ALL", .deallocateAll),
        ("UNLISTEN *", .unlistenAll),
        ("DISCARD ALL", .discardAll),
        ("DISCARD TEMP", .discardTemp),
        ("DISCARD TEMPORARY", .discardTemp),
        ("CLOSE ALL", .closeAllCursors),
        ("SELECT pg_advisory_unlock_all()", .advisoryUnlockAll),
        ("RESET ALL", .resetAll),
    ])
    func releasingStatementsAreRecognized(_ sql: String, _ effect: UnpinEffect) {
        #expect(classify(sql).unpin == effect)
    }

    @Test(arguments: [
        ("DEALLOCATE _pg3_0", "_pg3_0"),
        ("deallocate prepare S_1;", "s_1"),
        ("DEALLOCATE \"S_1\"", "S_1"),
    ])
    func deallocateNamesTheStatementAsPostgresReadsIt(_ sql: String, _ name: String) {
        #expect(classify(sql).deallocates == name)
    }

    @Test func deallocateAllAndOtherStatementsNameNoStatement() {
        #expect(classify("DEALLOCATE ALL").deallocates == nil)
        #expect(classify("SELECT 1").deallocates == nil)
    }

    @Test func statementsThatReleaseOnlyOneThingDoNotUnpin() {
        #expect(classify("DEALLOCATE p").unpin == nil)
        #expect(classify("UNLISTEN jobs").unpin == nil)
        #expect(classify("CLOSE c").unpin == nil)
        #expect(classify("SELECT pg_advisory_unlock(1)").unpin == nil)
        #expect(classify("DISCARD PLANS").unpin == nil)
    }

    @Test func eachUnpinReleasesExactlyItsOwnPins() {
        let expected: [UnpinEffect: Set<PinReason>] = [
            .deallocateAll: [.sqlPrepare], .unlistenAll: [.listen], .discardAll: Set(PinReason.allCases),
            .discardTemp: [.temporaryTable], .closeAllCursors: [.holdCursor],
            .advisoryUnlockAll: [.sessionAdvisoryLock], .resetAll: [.untrackedSetting],
        ]
        for effect in UnpinEffect.allCases {
            #expect(Set(PinReason.allCases.filter(effect.releases)) == expected[effect], "\(effect)")
        }
    }

    @Test func pinChangesApplyInStatementOrder() {
        let listenThenStop = classify("LISTEN a; UNLISTEN *")
        #expect(listenThenStop.pin == nil)
        #expect(listenThenStop.applyingPinChanges(to: []) == [])

        let stopThenListen = classify("UNLISTEN *; LISTEN a")
        #expect(stopThenListen.pin == .listen)
        #expect(stopThenListen.unpin == .unlistenAll)
        #expect(stopThenListen.applyingPinChanges(to: [.listen, .temporaryTable]) == [.listen, .temporaryTable])

        let several = classify("LISTEN a; CREATE TEMP TABLE t (id int)")
        #expect(several.pin == .listen)
        #expect(several.applyingPinChanges(to: []) == [.listen, .temporaryTable])
        #expect(classify("UNLISTEN *").applyingPinChanges(to: [.listen, .temporaryTable]) == [.temporaryTable])
        #expect(classify("DISCARD ALL").applyingPinChanges(to: Set(PinReason.allCases)) == [])
    }

    @Test func aPreparedStatementsBodyDoesNotPinUntilItRuns() {
        let prepared = classify("PREPARE q AS SELECT pg_advisory_lock(1)")
        #expect(prepared.applyingPinChanges(to: []) == [.sqlPrepare])
        #expect(prepared.isWrite, "the body still needs the primary")
    }
}

@Suite struct SessionCommandTests {
    private func commands(_ sql: String) -> [SessionCommand] { classify(sql).sessionCommands }

    @Test func setIsTrackedWithItsExactText() {
        #expect(commands("SET search_path TO app, \"Public\"") == [
            SessionCommand(action: .set(name: "search_path", value: "app, \"Public\""), sql: "SET search_path TO app, \"Public\""),
        ])
        #expect(commands("set Statement_Timeout = 0 -- no limit") == [
            SessionCommand(action: .set(name: "statement_timeout", value: "0"), sql: "set Statement_Timeout = 0"),
        ])
        #expect(commands("SET SESSION work_mem = '64MB'") == [.set(name: "work_mem", value: "'64MB'", sql: "SET SESSION work_mem = '64MB'")])
        #expect(commands("SET myapp.tenant = '42'") == [.set(name: "myapp.tenant", value: "'42'", sql: "SET myapp.tenant = '42'")])
        #expect(commands("SET lock_timeout=-1") == [.set(name: "lock_timeout", value: "-1", sql: "SET lock_timeout=-1")])
        #expect(commands("SET \"DateStyle\" TO ISO, DMY") == [.set(name: "datestyle", value: "ISO, DMY", sql: "SET \"DateStyle\" TO ISO, DMY")])
    }

    @Test(arguments: [
        ("SET TIME ZONE 'Europe/Paris'", "timezone", "'Europe/Paris'"),
        ("SET NAMES 'UTF8'", "client_encoding", "'UTF8'"),
        ("SET SCHEMA 'app'", "search_path", "'app'"),
        ("SET ROLE reporting", "role", "reporting"),
        ("SET ROLE NONE", "role", "NONE"),
        ("SET SESSION AUTHORIZATION alice", "session_authorization", "alice"),
        ("SET XML OPTION DOCUMENT", "xmloption", "DOCUMENT"),
    ])
    func specialSetSyntaxMapsToTheParameter(_ sql: String, _ name: String, _ value: String) {
        #expect(commands(sql) == [.set(name: name, value: value, sql: sql)])
    }

    @Test(arguments: [
        ("SET search_path TO DEFAULT", "search_path"),
        ("SET work_mem = default", "work_mem"),
        ("SET TIME ZONE LOCAL", "timezone"),
        ("SET SESSION AUTHORIZATION DEFAULT", "session_authorization"),
        ("RESET search_path", "search_path"),
        ("RESET ROLE", "role"),
        ("RESET SESSION AUTHORIZATION", "session_authorization"),
        ("RESET TIME ZONE", "timezone"),
        ("RESET myapp.tenant", "myapp.tenant"),
    ])
    func resettingAParameterIsTracked(_ sql: String, _ name: String) {
        #expect(commands(sql) == [.reset(name: name, sql: sql)])
    }

    @Test func resetAllAndDiscardAllForgetEverything() {
        #expect(commands("RESET ALL") == [.resetAll(sql: "RESET ALL")])
        #expect(commands("DISCARD ALL") == [
            .reset(name: "session_authorization", sql: "SET SESSION AUTHORIZATION DEFAULT"), .resetAll(sql: "RESET ALL"),
        ])
    }

    @Test func setLocalIsMarkedSoItIsNotReplayed() {
        let local = commands("SET LOCAL statement_timeout = '5s'")
        #expect(local.count == 1)
        #expect(local.first?.isLocal == true)
        #expect(commands("SET statement_timeout = '5s'").first?.isLocal == false)
    }

    @Test func setInsideATransactionOpenedByTheSameQueryIsMarked() {
        let inBlock = commands("BEGIN; SET search_path = app; COMMIT; SET work_mem = '1MB'")
        #expect(inBlock.map(\.inTransactionBlock) == [true, false])
    }

    @Test func sessionCharacteristicsBecomeDefaultTransactionSettings() {
        #expect(commands("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, NOT DEFERRABLE") == [
            .set(name: "default_transaction_isolation", value: "'serializable'", sql: "SET default_transaction_isolation = 'serializable'"),
            .set(name: "default_transaction_read_only", value: "on", sql: "SET default_transaction_read_only = on"),
            .set(name: "default_transaction_deferrable", value: "off", sql: "SET default_transaction_deferrable = off"),
        ])
    }

    @Test func literalSetConfigIsReplayedAsTheSameCall() {
        #expect(commands("SELECT set_config('App.Tenant', 'o''brien', false)") == [
            .set(name: "app.tenant", value: "'o''brien'", sql: "SELECT pg_catalog.set_config('app.tenant', 'o''brien', false)"),
        ])
        #expect(commands("SELECT set_config('app.tenant', '42', true)").isEmpty, "transaction-local")
    }

    @Test func transactionScopedSettingsAreNotSessionCommands() {
        #expect(commands("SET TRANSACTION READ ONLY").isEmpty)
        #expect(commands("SET transaction_isolation = 'serializable'").isEmpty)
        #expect(commands("SET CONSTRAINTS ALL IMMEDIATE").isEmpty)
        #expect(commands("SET causeway.route = primary").isEmpty)
    }

    @Test func severalSetsInOneQueryAreAllTracked() {
        #expect(commands("SET a.x = 1; SELECT 1; SET lock_timeout = '1s'").map(\.action) == [
            .set(name: "a.x", value: "1"), .set(name: "lock_timeout", value: "'1s'"),
        ])
    }

    @Test func malformedSetGoesToThePrimary() {
        #expect(classify("SET").isWrite)
        #expect(classify("SET search_path").isWrite)
        #expect(classify("SET search_path =").isWrite)
    }
}

@Suite struct HintTests {
    @Test(arguments: [
        ("/* causeway: primary */ SELECT 1", RouteHint.primary),
        ("/*causeway:replica*/SELECT 1", .replica),
        ("/* CAUSEWAY = Replica */ SELECT 1", .replica),
        ("-- causeway: primary\nSELECT 1", .primary),
        ("/* app=web,causeway=auto */ SELECT 1", .auto),
        ("/* tracing */ /* causeway: replica */ SELECT 1", .replica),
        ("  \n/* causeway: primary */\n  UPDATE t SET a = 1", .primary),
    ])
    func aLeadingCommentSetsTheHint(_ sql: String, _ hint: RouteHint) {
        #expect(classify(sql).hint == hint)
    }

    @Test(arguments: [
        "SELECT /* causeway: primary */ 1",
        "SELECT 1; /* causeway: primary */ SELECT 2",
        "SELECT 1 -- causeway: primary",
        "/* causeway: nonsense */ SELECT 1",
        "/* causeway */ SELECT 1",
        "SELECT '/* causeway: primary */'",
    ])
    func commentsElsewhereAreNotHints(_ sql: String) {
        #expect(classify(sql).hint == nil)
    }
}

@Suite struct CausewayCommandTests {
    @Test(arguments: [
        ("SET causeway.route = primary", CausewayCommand.setRoute(.primary)),
        ("SET causeway.route TO 'replica'", .setRoute(.replica)),
        ("set Causeway.Route = Auto", .setRoute(.auto)),
        ("SET SESSION causeway.route = primary;", .setRoute(.primary)),
        ("SET causeway.consistency = strong", .setConsistency(.strong)),
        ("SET causeway.consistency TO 'eventual'", .setConsistency(.eventual)),
        ("SET causeway.min_lsn = '16/B374D848'", .setMinLSN(LSN(0x16_B374_D848))),
        ("SET causeway.route TO DEFAULT", .reset(.route)),
        ("RESET causeway.consistency", .reset(.consistency)),
        ("SHOW causeway.lsn", .show(.lsn)),
        ("SHOW causeway.route", .show(.route)),
        ("show CAUSEWAY.min_lsn", .show(.minLSN)),
    ])
    func causewaySettingsAreInterceptedByTheProxy(_ sql: String, _ command: CausewayCommand) {
        let classification = classify(sql)
        #expect(classification.causewayCommand == command)
        #expect(classification.sessionCommands.isEmpty)
    }

    @Test(arguments: [
        ("SET causeway.route = bogus", "22023", "expected primary, replica or auto"),
        ("SET causeway.consistency = 'linearizable'", "22023", "expected eventual, session or strong"),
        ("SET causeway.min_lsn = 'not an lsn'", "22023", "or an LSN such as"),
        ("SET causeway.min_lsn = '1/2/3'", "22023", "or an LSN such as"),
        ("SET causeway.route = primary, replica", "22023", "expected a single value"),
        ("SET LOCAL causeway.route = primary", "0A000", "SET LOCAL is not supported"),
        ("SET causeway.nope = 1", "42704", "unrecognized configuration parameter \"causeway.nope\""),
        ("SHOW causeway.nope", "42704", "unrecognized configuration parameter"),
        ("SET causeway.lsn = '0/1'", "55P02", "cannot be changed"),
        ("SET causeway.route = primary; SELECT 1", "0A000", "must be sent as a query of their own"),
    ])
    func badCausewayCommandsGetAClearError(_ sql: String, _ sqlState: String, _ fragment: String) throws {
        let command = try #require(classify(sql).causewayCommand)
        guard case let .invalid(state, message) = command else {
            Issue.record("expected an error for \(sql), got \(command)")
            return
        }
        #expect(state == sqlState)
        #expect(message.contains(fragment), "\(message)")
    }

    @Test func ordinarySettingsAreNotIntercepted() {
        #expect(classify("SET search_path = app").causewayCommand == nil)
        #expect(classify("SHOW search_path").causewayCommand == nil)
        #expect(classify("SELECT 'SET causeway.route = primary'").causewayCommand == nil)
    }

    @Test func anUnterminatedCausewayCommandIsLeftToTheServer() {
        let classification = classify("SET causeway.min_lsn = '0/1")
        #expect(classification.causewayCommand == nil)
        #expect(classification.isWrite)
    }
}

@Suite struct FunctionListTests {
    @Test func calledFunctionsAreListedOnceWithoutSchema() {
        let classification = classify("""
            SELECT lower(a), public.my_func(1), "Quoted"(2), LOWER(b) FROM t
            WHERE x IN (1) AND EXISTS (SELECT 1) AND y = ANY(ARRAY[1]) AND coalesce(z, 0) > 0
            """)
        #expect(classification.functions == ["lower", "my_func", "Quoted", "coalesce"])
    }

    @Test func relationsWithColumnListsAreNotFunctions() {
        #expect(classify("INSERT INTO t(a) VALUES (f())").functions == ["f"])
        #expect(classify("SELECT count(*) FROM generate_series(1, 3) AS g(n)").functions == ["count", "generate_series"])
        #expect(classify("CREATE TABLE t (id int)").functions.isEmpty)
    }

    @Test func volatileUserFunctionsMakeTheQueryAWrite() {
        #expect(!classify("SELECT audit('x')").isWrite)
        #expect(classify("SELECT audit('x')", volatile: ["audit"]).isWrite)
        #expect(classify("SELECT app.audit('x')", volatile: ["audit"]).isWrite)
        #expect(!classify("SELECT 'audit(1)'", volatile: ["audit"]).isWrite)
        #expect(!classify("SELECT audit FROM t", volatile: ["audit"]).isWrite, "a column, not a call")
        #expect(classify("SELECT 1; SELECT audit()", volatile: ["audit"]).isWrite)
        #expect(!classify("EXPLAIN SELECT audit()", volatile: ["audit"]).isWrite, "plain EXPLAIN runs nothing")
    }
}

@Suite struct StatementSplittingTests {
    @Test(arguments: [
        ("SELECT 1", 1), ("SELECT 1;", 1), ("SELECT 1; SELECT 2", 2), ("SELECT 1;; SELECT 2;", 2),
        (";", 0), ("", 0), ("  -- nothing\n", 0), ("/* a */ ; /* b */", 0),
        ("SELECT ';'; SELECT $$;$$; SELECT \";\"", 3),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3", 2),
        ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END", 1),
        ("BEGIN; SELECT 1; END", 3),
    ])
    func statementsAreCountedAtTopLevelSeparatorsOnly(_ sql: String, _ count: Int) {
        #expect(classify(sql).statementCount == count)
    }

    @Test func anAtomicFunctionBodyIsNotATransactionEnd() {
        let classification = classify("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END")
        #expect(classification.transaction == nil)
        #expect(!classification.leavesTransactionOpen)
    }
}
