"""The cost-versus-error points, table and figure from small records."""

from results import cost_error

CELLS = """table,dataset,model,augment,epochs,label_noise,method,metric,n,mean,ci95,rho,choice,unfinished,paper,paper_ci95,diff
4,digits,wrn10_2,,,0.4,sam,top1_accuracy,5,90.0,1.5,0.05,x,0,,,-
4,digits,wrn10_2,,,0.4,sgd,top1_accuracy,5,85.0,2.0,,x,0,,,-
4,digits,wrn10_2,,,0.4,looksam,top1_accuracy,5,91.0,1.0,0.05,x,0,,,-
4,digits,wrn10_2,,,0.4,rwp,top1_accuracy,0,,,0.05,x,5,,,-
4,digits,wrn10_2,,,0.4,samon,top1_accuracy,5,90.0,2.5,0.05,x,0,,,-
"""
STEP_TIME = {
    'variants': {
        'sgd': {'x_sgd': 1.0},
        'sam': {'x_sgd': 2.0},
        'looksam': {'x_sgd': 1.25},
        'rwp': {'x_sgd': 1.01},
        'samon': {'x_sgd': 1.5},
    }
}


def test_points_turn_accuracy_into_error_and_skip_unfinished_cells():
  found = cost_error.points(CELLS, STEP_TIME)
  assert [(p.method, p.cost, p.error, p.ci95, p.seeds) for p in found] == [
      ('sgd', 1.0, 15.0, 2.0, 5),
      ('sam', 2.0, 10.0, 1.5, 5),
      ('looksam', 1.25, 9.0, 1.0, 5),
      ('samon', 1.5, 10.0, 2.5, 5),
  ]


def test_markdown_compares_every_method_with_sam(tmp_path):
  found = cost_error.points(CELLS, STEP_TIME)
  table = cost_error.markdown(found)
  assert '| looksam | 1.25 | 9.00 +- 1.00 | 5 | cheaper, lower error |' in table
  assert '| sgd | 1.00 | 15.00 +- 2.00 | 5 | cheaper, higher error |' in table
  assert '| samon | 1.50 | 10.00 +- 2.50 | 5 | cheaper, same error |' in table
  path = cost_error.figure(found, tmp_path / 'cost_error.png')
  assert (tmp_path / 'cost_error.png').read_bytes()[:4] == b'\x89PNG'
  assert path.endswith('cost_error.png')
