--- Commands only; nothing starts until `require('flashls').setup()` is called.
if vim.g.loaded_flashls then
  return
end
vim.g.loaded_flashls = true

vim.api.nvim_create_user_command('FlashlsToggle', function()
  require('flashls').toggle()
end, { desc = 'flashls: turn ghost-text suggestions on or off' })
