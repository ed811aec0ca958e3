'use strict';
/**
 * flashls for VS Code: starts `flashls serve` over stdio with vscode-languageclient, whose
 * built-in inline completion feature turns the server's suggestions into ghost text.
 * The settings are declared in package.json, generated from the server's schema.
 */

const vscode = require('vscode');
const {
  LanguageClient,
  State,
  DidChangeConfigurationNotification,
} = require('vscode-languageclient/node');

const SECTION = 'flashls';
// Settings the extension reads to start the server; the server does not know them.
const CLIENT_ONLY = new Set(['serverPath', 'serverArgs', 'trace']);

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.StatusBarItem} */
let statusBar;
/** @type {vscode.OutputChannel} */
let output;
/** What the status bar shows, merged from the client state and `flashls/status`. */
const status = { state: 'starting', message: '', latencyMs: undefined };

/** The names of the server's settings, from package.json's configuration block. */
function serverSettingNames(packageJSON) {
  const properties = packageJSON.contributes.configuration.properties;
  return Object.keys(properties)
    .map((key) => key.slice(SECTION.length + 1))
    .filter((name) => !CLIENT_ONLY.has(name.split('.')[0]));
}

/**
 * The server's settings that the user has set, at any level. Defaults are left out, so that
 * the server's own defaults, `flashls.serverArgs` flags and FLASHLS_* variables still apply.
 */
function serverSettings(names) {
  const configuration = vscode.workspace.getConfiguration(SECTION);
  const entries = [];
  for (const name of names) {
    const levels = configuration.inspect(name) || {};
    const set = ['globalValue', 'workspaceValue', 'workspaceFolderValue',
      'globalLanguageValue', 'workspaceLanguageValue', 'workspaceFolderLanguageValue']
      .some((level) => levels[level] !== undefined);
    if (set) {
      entries.push([name, configuration.get(name)]);
    }
  }
  return Object.fromEntries(entries);
}

function suggestionsEnabled() {
  return vscode.workspace.getConfiguration(SECTION).get('enable', true);
}

function renderStatus() {
  const latency = status.latencyMs === undefined ? '' : ` ${Math.round(status.latencyMs)} ms`;
  const looks = {
    starting: ['$(loading~spin) flashls', 'flashls: starting the server'],
    loading: ['$(loading~spin) flashls', 'flashls: loading the model'],
    ready: [`$(sparkle) flashls${latency}`, 'flashls: ready'],
    error: ['$(error) flashls', 'flashls: error'],
    stopped: ['$(debug-disconnect) flashls', 'flashls: the server is not running'],
  };
  const [text, tooltip] = looks[status.state] || [`$(sparkle) flashls${latency}`, 'flashls'];
  if (!suggestionsEnabled()) {
    statusBar.text = '$(circle-slash) flashls';
    statusBar.tooltip = 'flashls: suggestions are off (click to turn them on)';
  } else {
    statusBar.text = text;
    const detail = status.message ? `\n${status.message}` : '';
    statusBar.tooltip = `${tooltip}${detail}\n(click to turn suggestions off)`;
  }
  statusBar.backgroundColor = status.state === 'error'
    ? new vscode.ThemeColor('statusBarItem.errorBackground')
    : undefined;
}

function setStatus(update) {
  Object.assign(status, update);
  renderStatus();
}

/** Languages from package.json's `onLanguage:` activation events, files and untitled. */
function documentSelector(packageJSON) {
  const languages = packageJSON.activationEvents
    .filter((event) => event.startsWith('onLanguage:'))
    .map((event) => event.slice('onLanguage:'.length));
  return languages.flatMap((language) => [
    { scheme: 'file', language },
    { scheme: 'untitled', language },
  ]);
}

function serverOptions() {
  const configuration = vscode.workspace.getConfiguration(SECTION);
  const command = configuration.get('serverPath', 'flashls') || 'flashls';
  const args = ['serve', ...configuration.get('serverArgs', [])];
  return { command, args, options: { env: process.env } };
}

function clientOptions(packageJSON, names) {
  return {
    documentSelector: documentSelector(packageJSON),
    outputChannel: output,
    initializationOptions: () => ({ [SECTION]: serverSettings(names) }),
    synchronize: { configurationSection: SECTION },
    middleware: {
      // The server's textDocument/completion serves editors without ghost text; here it
      // would repeat the ghost text in the suggest widget.
      provideCompletionItem: () => undefined,
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!suggestionsEnabled()) {
          return null;
        }
        const started = Date.now();
        const result = await next(document, position, context, token);
        // An error stays until the server's `flashls/status` says otherwise: a request
        // answered with nothing while the engine fails is no sign that it is back.
        if (!token.isCancellationRequested && status.state !== 'error') {
          setStatus({ state: 'ready', latencyMs: Date.now() - started });
        }
        return result;
      },
      workspace: {
        // The server asks for the `flashls` section; answer without the client's keys.
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          return params.items.map((item, index) =>
            item.section === SECTION ? serverSettings(names) : answers[index]);
        },
        didChangeConfiguration: async () => {
          renderStatus();
          if (!client) {
            return; // stopped or restarting: the next start sends the settings anyway
          }
          await client.sendNotification(DidChangeConfigurationNotification.type, {
            settings: { [SECTION]: serverSettings(names) },
          });
        },
      },
    },
  };
}

async function startClient(context) {
  const packageJSON = context.extension.packageJSON;
  const names = serverSettingNames(packageJSON);
  client = new LanguageClient(
    SECTION, 'flashls', serverOptions(), clientOptions(packageJSON, names));
  client.onDidChangeState((event) => {
    if (event.newState === State.Starting) {
      setStatus({ state: 'starting', message: '' });
    } else if (event.newState === State.Running) {
      // Not ready yet: the server says so (`flashls/status`) once its model is loaded.
      setStatus({ state: 'loading', message: '' });
    } else if (event.newState === State.Stopped) {
      setStatus({ state: 'stopped' });
    }
  });
  // Optional progress reports from the server: model loading, errors, latency.
  client.onNotification('flashls/status', (params) => {
    setStatus({
      state: params.state,
      message: params.message || '',
      latencyMs: params.latencyMs === undefined ? status.latencyMs : params.latencyMs,
    });
  });
  // A suggestion cut by the time budget is complete now: ask again where the cursor still
  // is, so the whole of it shows without a keystroke (the server answers from its cache).
  client.onNotification('flashls/suggestionFinished', (params) => {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !client || !suggestionsEnabled()) {
      return;
    }
    const here = client.code2ProtocolConverter.asPosition(editor.selection.active);
    const sameDocument =
      client.code2ProtocolConverter.asUri(editor.document.uri) === params.textDocument.uri;
    if (sameDocument && here.line === params.position.line
        && here.character === params.position.character) {
      vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
    }
  });
  try {
    await client.start();
  } catch (error) {
    setStatus({ state: 'error', message: String(error) });
    const choice = await vscode.window.showErrorMessage(
      `flashls: could not start \`${serverOptions().command} serve\`: ${error}`,
      'Open Settings');
    if (choice === 'Open Settings') {
      vscode.commands.executeCommand('workbench.action.openSettings', 'flashls.serverPath');
    }
  }
}

async function stopClient() {
  const running = client;
  client = undefined;
  if (running) {
    await running.stop().catch(() => undefined);
  }
}

function registerCommands(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand('flashls.toggle', async () => {
      const configuration = vscode.workspace.getConfiguration(SECTION);
      await configuration.update(
        'enable', !suggestionsEnabled(), vscode.ConfigurationTarget.Global);
      renderStatus();
    }),
    vscode.commands.registerCommand('flashls.restart', async () => {
      await stopClient();
      await startClient(context);
    }),
    vscode.commands.registerCommand('flashls.showOutput', () => output.show(true)),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration('flashls.serverPath')
          || event.affectsConfiguration('flashls.serverArgs')) {
        await stopClient();
        await startClient(context);
      }
    }),
  );
}

// How long the cursor rests before the server is told where the user looks.
const FOCUS_DEBOUNCE_MS = 250;
let focusTimer;

/**
 * Tells the server which document is in front and where its cursor rests
 * (`textDocument/didFocus`), so it evaluates that place while the user reads.
 */
function reportFocus(editor) {
  clearTimeout(focusTimer);
  if (!editor || !client || !client.isRunning() || !suggestionsEnabled()) {
    return;
  }
  focusTimer = setTimeout(() => {
    if (!client || !client.isRunning()) {
      return;
    }
    const converter = client.code2ProtocolConverter;
    client.sendNotification('textDocument/didFocus', {
      textDocument: { uri: converter.asUri(editor.document.uri) },
      position: converter.asPosition(editor.selection.active),
    }).catch(() => undefined);
  }, FOCUS_DEBOUNCE_MS);
}

// How long a selection stays before the server is told of it (not every step of a drag).
const SELECTION_DEBOUNCE_MS = 500;
let selectionTimer;

/**
 * Tells the server what text the user selected (`flashls/didYank`): with the `recent`
 * context source, the latest selections go into the prompt (VS Code reports no copies).
 */
function reportSelection(editor) {
  clearTimeout(selectionTimer);
  if (!editor || editor.selection.isEmpty || !client || !client.isRunning()
      || !suggestionsEnabled()) {
    return;
  }
  selectionTimer = setTimeout(() => {
    if (!client || !client.isRunning() || editor.selection.isEmpty) {
      return;
    }
    client.sendNotification('flashls/didYank', {
      textDocument: { uri: client.code2ProtocolConverter.asUri(editor.document.uri) },
      text: editor.document.getText(editor.selection),
    }).catch(() => undefined);
  }, SELECTION_DEBOUNCE_MS);
}

function registerFocus(context) {
  context.subscriptions.push(
    vscode.window.onDidChangeActiveTextEditor((editor) => reportFocus(editor)),
    vscode.window.onDidChangeTextEditorSelection((event) => {
      reportFocus(event.textEditor);
      reportSelection(event.textEditor);
    }),
    { dispose: () => { clearTimeout(focusTimer); clearTimeout(selectionTimer); } },
  );
}

async function activate(context) {
  output = vscode.window.createOutputChannel('flashls', { log: true });
  statusBar = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusBar.name = 'flashls';
  statusBar.command = 'flashls.toggle';
  renderStatus();
  statusBar.show();
  context.subscriptions.push(output, statusBar, { dispose: stopClient });
  registerCommands(context);
  registerFocus(context);
  await startClient(context);
  reportFocus(vscode.window.activeTextEditor);
}

function deactivate() {
  return stopClient();
}

module.exports = { activate, deactivate };
