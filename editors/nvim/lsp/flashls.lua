--- flashls: fill-in-the-middle ghost-text completions from a local quantized model.
---
--- Used by Neovim 0.11+ (`vim.lsp.config` / `vim.lsp.enable('flashls')`) and by
--- nvim-lspconfig, both of which read `lsp/<name>.lua` from the runtimepath.
--- Settings go under `settings.flashls`; every name is listed by `flashls serve --help`
--- and in the flashls README (for example `max_tokens`, `model`, `time_budget_ms`).
---
--- ```lua
--- vim.lsp.config('flashls', { settings = { flashls = { max_tokens = 64 } } })
--- vim.lsp.enable('flashls')
--- ```

---@type vim.lsp.Config
return {
  cmd = { 'flashls', 'serve' },
  filetypes = {
    'c',
    'cpp',
    'cs',
    'css',
    'go',
    'html',
    'java',
    'javascript',
    'javascriptreact',
    'kotlin',
    'lua',
    'php',
    'python',
    'ruby',
    'rust',
    'scala',
    'sh',
    'swift',
    'typescript',
    'typescriptreact',
    'zig',
  },
  root_markers = { '.git' },
  -- Without a root the server still works on single files.
  workspace_required = false,
  settings = {
    flashls = {},
  },
  -- The server reads the same settings at start-up (initializationOptions) and on
  -- workspace/didChangeConfiguration, so users write them once, under `settings`.
  before_init = function(params, config)
    local flashls_settings = vim.tbl_get(config, 'settings', 'flashls') or {}
    params.initializationOptions = {
      flashls = next(flashls_settings) and flashls_settings or vim.empty_dict(),
    }
  end,
}
